"""The lazy CUDA build: never at import, clear cached errors, flag-keyed builds.

These run on CPU-only machines too (CI); they fake a missing GPU where needed.
"""
import subprocess
import sys

import pytest
import torch

from kpnt import _backend
from kpnt.spec import ColourLevelSpec


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
    with pytest.raises(_backend.BackendError, match="mlp.cu, colour_level.cu, front_level.cu"):
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


# ---------------------------------------------------------------- registration in kpnt.ops


def _colour_inputs():
    g = torch.Generator().manual_seed(0)
    D = torch.randn(1, 3, 9, 11, generator=g) * 0.05
    var = torch.full_like(D, 0.02**2)
    ws = [torch.randn(64, 32, generator=g) * 0.2] + [torch.randn(64, 64, generator=g) * 0.2] * 5
    ws += [torch.randn(16, 64, generator=g) * 0.2]
    return D, var, ws


def test_cuda_backend_is_registered_lazily():
    code = (
        "import kpnt._backend as b; from kpnt.ops import dispatch;"
        "assert 'cuda' in dispatch._loaders, dispatch._loaders;"
        "assert not b.is_built()"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_auto_on_cpu_tensors_uses_the_reference_without_loading(monkeypatch):
    from kpnt import ops
    from kpnt.ops import dispatch

    loads = []

    def loader():
        loads.append(1)
        raise AssertionError("the CUDA backend must not load for CPU tensors")

    monkeypatch.setattr(dispatch, "_registered", {"torch": dispatch.OPS})
    monkeypatch.setattr(dispatch, "_loaders", {"cuda": loader})
    D, var, ws = _colour_inputs()
    assert ops.resolve_backend("auto", torch.device("cpu")) == "torch"
    got = ops.colour_level(D, var, ws, ColourLevelSpec(), backend="auto")
    ref = ops.colour_level(D, var, ws, ColourLevelSpec(), backend="torch")
    assert loads == []
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_explicit_cuda_without_gpu_is_a_clear_error(monkeypatch):
    from kpnt import ops
    from kpnt.ops import dispatch
    from kpnt.ops._cuda import extension

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(extension, "_module", None)  # a process that never loaded the extension
    monkeypatch.setattr(dispatch, "_registered", {"torch": dispatch.OPS})
    monkeypatch.setattr(dispatch, "_loaders", {"cuda": dispatch._load_cuda})
    D, var, ws = _colour_inputs()
    with pytest.raises(_backend.BackendUnavailableError) as err:
        ops.colour_level(D, var, ws, ColourLevelSpec(), backend="cuda")
    msg = str(err.value)
    assert isinstance(err.value, ValueError) and "\n" not in msg
    assert msg.startswith("backend 'cuda' is not available: ") and "torch.cuda.is_available() is False" in msg
    assert isinstance(err.value.__cause__, _backend.BackendError)


def test_auto_falls_back_once_and_logs_when_the_kernels_do_not_load(monkeypatch, caplog):
    """'auto' on a CUDA device whose kernels cannot load: the reference, logged once."""
    from kpnt.ops import dispatch

    def broken():
        raise _backend.BackendError("building the fused CUDA kernels failed (nvcc exploded)")

    monkeypatch.setattr(dispatch, "_registered", {"torch": dispatch.OPS})
    monkeypatch.setattr(dispatch, "_loaders", {"cuda": broken})
    monkeypatch.setattr(dispatch, "_auto_fallback_logged", set())
    with caplog.at_level("WARNING", logger="kpnt.ops.dispatch"):
        assert dispatch.resolve_backend("auto", torch.device("cuda")) == "torch"
        assert dispatch.resolve_backend("auto", torch.device("cuda")) == "torch"
    hits = [r for r in caplog.records if "nvcc exploded" in r.getMessage()]
    assert len(hits) == 1 and "using the PyTorch reference" in hits[0].getMessage()
    with pytest.raises(_backend.BackendUnavailableError, match="nvcc exploded"):
        dispatch._backend_ops("cuda")


def test_installed_kernel_sources_are_found(monkeypatch, tmp_path):
    """A wheel puts kernels/ under <prefix>/share/kpnt/kernels (pyproject data-files)."""
    monkeypatch.delenv("KPNT_KERNELS_DIR", raising=False)
    share = tmp_path / "share" / "kpnt" / "kernels"
    share.mkdir(parents=True)
    (share / _backend.SOURCES[0]).write_text("// test")
    monkeypatch.setattr(sys, "prefix", str(tmp_path))
    assert _backend.kernels_dir() != share            # the checkout's sources win
    fake_pkg = tmp_path / "site" / "kpnt"
    fake_pkg.mkdir(parents=True)
    monkeypatch.setattr(_backend, "__file__", str(fake_pkg / "_backend.py"))
    assert _backend.kernels_dir() == share
