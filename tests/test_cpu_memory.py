"""kpnt.cpu_memory: freed memory kept for reuse in CPU inference, same output."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Denoise one small Bayer mosaic with the shipped weights in a fresh process,
# with the malloc setting made first (argv[2] == "keep") or never made.
_SCRIPT = """
import sys, numpy as np, torch
import kpnt.cpu_memory as cm
if sys.argv[2] == "keep":
    assert cm.keep_freed_memory() is True
    assert cm.keep_freed_memory() is True      # idempotent
else:
    cm._done = False                            # the setting is never made
torch.set_num_threads(2)
from kpnt.denoise import denoise_array
from kpnt.mosaic import CFA
from kpnt.weights_io import load_weights
model, _ = load_weights("kpnt/weights/bayer.safetensors", "bayer")
x = np.random.default_rng(0).uniform(0.05, 0.6, (200, 260)).astype(np.float32)
noise = np.array([[1e-3] * 3, [1e-6] * 3], np.float32)
np.save(sys.argv[1], denoise_array(model, x, CFA.bayer("GRBG"), noise, tile=128, reproducible=True))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_kept_memory_changes_nothing_but_the_allocator(tmp_path):
    outs = {}
    for mode in ("keep", "plain"):
        path = tmp_path / f"{mode}.npy"
        subprocess.run([sys.executable, "-c", _SCRIPT, str(path), mode], cwd=ROOT, check=True, timeout=300)
        outs[mode] = np.load(path)
    assert outs["keep"].shape == (200, 260, 3) and np.isfinite(outs["keep"]).all()
    assert np.array_equal(outs["keep"], outs["plain"])


_RSS_SCRIPT = """
import sys, numpy as np
import kpnt.cpu_memory as cm
if sys.argv[1] == "keep":
    assert cm.keep_freed_memory()
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * 4096
before = rss()
a = np.ones(200 * 2**20, np.uint8)          # 200 MB, touched
del a
print((rss() - before) // 2**20)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_freed_blocks_stay_mapped_only_when_kept():
    kept = {mode: int(subprocess.run([sys.executable, "-c", _RSS_SCRIPT, mode], cwd=ROOT, check=True, timeout=60,
                                     capture_output=True, text=True).stdout) for mode in ("keep", "plain")}
    # kept: the 200 MB stay resident for the next block; plain: unmapped on free
    assert kept["keep"] >= 190 and kept["plain"] < 20, kept
