"""CUDA tests: marked ``cuda``, skipped cleanly on machines without a GPU.

Only items carrying the ``cuda`` marker are skipped; the CPU-side tests in
this folder (lazy build, error paths) run everywhere, CI included.
"""
import sys
from pathlib import Path

import pytest
import torch

# Helpers shared with the CPU tests (tests/denoise_helpers.py) import by
# name; put tests/ on the path also when only this folder is collected.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seeded_rng():
    """Every test starts from the same RNG state (CPU and CUDA), so its
    random inputs do not depend on which tests ran before it: a tolerance
    that holds for one order holds for every order and for a test run alone."""
    torch.manual_seed(0)
    yield
