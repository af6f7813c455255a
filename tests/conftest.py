"""Fixtures shared by several test modules."""
import importlib.util
from pathlib import Path

import pytest

_BENCH_QUALITY = Path(__file__).resolve().parents[1] / "tools" / "bench_quality.py"


@pytest.fixture(scope="module")
def bq():
    """tools/bench_quality.py loaded as a module (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location("bench_quality", _BENCH_QUALITY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
