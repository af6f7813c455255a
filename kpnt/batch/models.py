"""The models of a batch: each sensor kind's weights loaded once, and a
guard that notices a non-finite model output.

Why a guard: the uint16 conversion turns NaN into 0 (black) and inf into
white, so a NaN in the model's output would otherwise be written as a
black DNG and counted as done.  A forward hook checks every tile's output
on the device (no host sync per tile); the file is checked once at its end.
"""
from __future__ import annotations

import logging
import threading
from pathlib import Path

from kpnt.errors import KpntError

log = logging.getLogger("kpnt")


class NonFiniteOutputError(KpntError):
    """The model produced NaN/inf for a file; nothing was written."""


class FiniteGuard:
    """Forward hook: records whether any output since :meth:`reset` held a
    NaN or inf.  Thread-safe (CPU tiles run in parallel threads)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._bad = None

    def __call__(self, module, inputs, output) -> None:
        import torch

        bad = ~torch.isfinite(output).all()
        with self._lock:
            self._bad = bad if self._bad is None else (self._bad | bad)

    def reset(self) -> None:
        with self._lock:
            self._bad = None

    def tripped(self) -> bool:
        """Whether a non-finite value came out since the last reset (one
        device sync)."""
        with self._lock:
            return bool(self._bad) if self._bad is not None else False


def check_weights_file(path: Path) -> None:
    """Load a ``--weights`` file once before any work, so that a missing or
    corrupt file is one line up front instead of one per input."""
    from kpnt.weights_io import load_weights

    load_weights(path, device="cpu")


class ModelCache:
    """Loads each sensor's weights once (the user's file or the shipped one)
    and hooks a :class:`FiniteGuard` onto each model."""

    def __init__(self, weights: Path | None, device, backend: str):
        self.weights, self.device, self.backend = weights, device, backend
        self.models = {}
        self.guard = FiniteGuard()

    def get(self, sensor: str):
        """The model for a sensor kind (WeightsError if there is none)."""
        if sensor in self.models:
            return self.models[sensor]
        from kpnt.weights_io import load_weights, shipped_weights

        path = self.weights if self.weights is not None else shipped_weights(sensor)
        model, _meta = load_weights(path, sensor=sensor, device=self.device)
        model.backend = self.backend
        model.eval()
        model.register_forward_hook(self.guard)
        self.models[sensor] = model
        log.debug("loaded %s weights from %s", sensor, path)
        return model
