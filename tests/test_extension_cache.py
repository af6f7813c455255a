"""kpnt.ops._cuda.extension.ext(): the extension is loaded once per process
(kpnt._backend.load re-hashes every kernel source to find its build, far too
slow for every op call), and a failed load is not remembered as a module."""
import pytest

from kpnt import _backend
from kpnt.ops._cuda import extension


def test_the_extension_is_loaded_once(monkeypatch):
    calls, module = [], object()
    monkeypatch.setattr(_backend, "load", lambda: calls.append(1) or module)
    monkeypatch.setattr(extension, "_module", None)
    assert extension.ext() is module
    assert extension.ext() is module
    assert len(calls) == 1


def test_a_failed_load_is_not_kept(monkeypatch):
    module = object()
    outcomes = [_backend.BackendError("no CUDA compiler"), module]

    def load():
        out = outcomes.pop(0)
        if isinstance(out, BaseException):
            raise out
        return out

    monkeypatch.setattr(_backend, "load", load)
    monkeypatch.setattr(extension, "_module", None)
    with pytest.raises(_backend.BackendError, match="no CUDA compiler"):
        extension.ext()
    assert extension.ext() is module
