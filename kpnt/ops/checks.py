"""Argument checks of the public ops: each names the argument, what was
expected and what came, in one line (``ValueError``)."""
from __future__ import annotations

from typing import Sequence

import torch

from kpnt.spec import MlpShape


def check(cond: bool, what: str, expected: str, got) -> None:
    """Raise ``ValueError('<what>: expected <expected>, got <got>')`` unless ``cond``."""
    if not cond:
        raise ValueError(f"{what}: expected {expected}, got {got}")


def check_image(t: torch.Tensor, name: str, channels: int | None = None) -> None:
    """``t`` is a floating-point (N, C, H, W) tensor, with ``channels`` channels if given."""
    check(isinstance(t, torch.Tensor), name, "a torch.Tensor", type(t).__name__)
    check(t.dim() == 4, name, "shape (N, C, H, W)", tuple(t.shape))
    check(t.is_floating_point(), name, "a floating-point tensor", t.dtype)
    if channels is not None:
        check(t.shape[1] == channels, f"{name} channels", str(channels), t.shape[1])


def check_noise(noise: torch.Tensor, n: int, ref: torch.Tensor) -> None:
    """``noise`` is (n, 2, 3) with ``ref``'s dtype and device."""
    check(isinstance(noise, torch.Tensor) and tuple(noise.shape) == (n, 2, 3), "noise", f"shape ({n}, 2, 3)",
          tuple(getattr(noise, "shape", ())))
    check(noise.dtype == ref.dtype and noise.device == ref.device, "noise dtype/device",
          f"{ref.dtype} on {ref.device}", f"{noise.dtype} on {noise.device}")


def check_same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    """``a`` has ``b``'s batch size, spatial size, dtype and device."""
    check(a.shape[0] == b.shape[0] and a.shape[-2:] == b.shape[-2:], f"{what} batch/size",
          f"{tuple(b.shape[:1]) + tuple(b.shape[-2:])}", tuple(a.shape[:1]) + tuple(a.shape[-2:]))
    check(a.dtype == b.dtype and a.device == b.device, f"{what} dtype/device", f"{b.dtype} on {b.device}",
          f"{a.dtype} on {a.device}")


def check_weights(weights: Sequence[torch.Tensor], n_in: int, n_out: int, what: str) -> None:
    """A chained weight list ``[W0 (h, n_in), ..., Wout (n_out, h)]``."""
    check(len(weights) >= 2, f"{what} layers", "at least 2 matrices", len(weights))
    check(weights[0].shape[1] == n_in, f"{what} input width", str(n_in), weights[0].shape[1])
    check(weights[-1].shape[0] == n_out, f"{what} output width", str(n_out), weights[-1].shape[0])
    for i in range(1, len(weights)):
        check(weights[i].shape[1] == weights[i - 1].shape[0], f"{what} layer {i} input width",
              str(weights[i - 1].shape[0]), weights[i].shape[1])


def check_mlp(weights: Sequence[torch.Tensor], shape: MlpShape, what: str) -> None:
    """A weight list of exactly ``shape`` (the op's spec)."""
    check_weights(weights, shape.n_in, shape.n_out, what)
    got = MlpShape.of(weights)
    check(got == shape, f"{what} shape", str(shape), str(got))
