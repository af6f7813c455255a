"""The lazy CUDA build: never at import, clear cached errors, flag-keyed builds.

These run on CPU-only machines too (CI); they fake a missing GPU where needed.
"""
import subprocess
import sys

import pytest
import torch

from kpnt import _backend


def test_import_kpnt_compiles_nothing():
    code = (
        "import sys, kpnt, kpnt.ops._cuda, kpnt._backend as b;"
        "assert not b.is_built();"
        "assert 'torch.utils.cpp_extension' not in sys.modules, 'cpp_extension imported at import time'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_gpu_is_a_clear_backend_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(_backend.BackendError, match="torch.cuda.is_available"):
        _backend.load()


def test_missing_sources_are_named(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("KPNT_KERNELS_DIR", str(tmp_path))
    with pytest.raises(_backend.BackendError, match="fused_mlp.cu"):
        _backend.load()


def test_failed_build_is_cached(monkeypatch, tmp_path):
    """A failing build raises a BackendError once and the same object afterwards, without rebuilding."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("TORCH_CUDA_ARCH_LIST", "9.0")
    monkeypatch.setenv("KPNT_CACHE_DIR", str(tmp_path))
    calls = []

    def broken_build(src_dir, flags, verbose):
        calls.append(1)
        raise RuntimeError("nvcc exploded\nmore lines")

    monkeypatch.setattr(_backend, "_build", broken_build)
    monkeypatch.setattr(_backend, "_cache", {})
    with pytest.raises(_backend.BackendError, match="nvcc exploded") as first:
        _backend.load()
    with pytest.raises(_backend.BackendError) as second:
        _backend.load()
    assert first.value is second.value
    assert len(calls) == 1


def test_flags_change_the_build_name(monkeypatch):
    monkeypatch.delenv("KPNT_BUILD_VERBOSE", raising=False)
    a = _backend.build_name(_backend.build_flags("9.0"))
    b = _backend.build_name(_backend.build_flags("8.0"))
    assert a != b and a == _backend.build_name(_backend.build_flags("9.0"))
    monkeypatch.setenv("KPNT_BUILD_VERBOSE", "1")
    assert _backend.build_name(_backend.build_flags("9.0")) != a
