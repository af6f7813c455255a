"""Public pyramid ops (reference :mod:`kpnt.ref.pyramid`)."""
from __future__ import annotations

import torch

from kpnt.ops.checks import check_image
from kpnt.ops.dispatch import implementation


def pyramid_down(x: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    """(N,C,H,W) -> (N,C,ceil(H/2),ceil(W/2)); see :func:`kpnt.ref.pyramid.down`."""
    check_image(x, "pyramid level")
    return implementation("pyramid_down", backend, x.device)(x)


def pyramid_up(x: torch.Tensor, size: tuple[int, int], backend: str = "torch") -> torch.Tensor:
    """(N,C,h,w) -> (N,C,*size); see :func:`kpnt.ref.pyramid.up`."""
    check_image(x, "pyramid level")
    return implementation("pyramid_up", backend, x.device)(x, tuple(size))
