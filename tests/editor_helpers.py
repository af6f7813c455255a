"""Rendering a DNG through a raw editor's command line (darktable-cli,
rawtherapee-cli), for the tests that check editors read kpnt's DNGs."""
import shutil
import subprocess

import numpy as np
import pytest
import tifffile

EDITORS = ["darktable-cli", "rawtherapee-cli"]


def require_editor(tool):
    """Skip the calling test when ``tool`` is not installed."""
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} not installed (Debian packages darktable / rawtherapee)")


def render(tool, src, out):
    """``src`` rendered by ``tool`` with its defaults to the TIFF ``out``, as float64."""
    if tool == "darktable-cli":
        cmd = [tool, str(src), str(out), "--core", "--configdir", str(out.parent / "dtconf"), "--library", ":memory:"]
    else:
        cmd = [tool, "-o", str(out), "-t", "-Y", "-c", str(src)]
    subprocess.run(cmd, capture_output=True, timeout=300, check=True)
    return tifffile.imread(out).astype(np.float64)
