"""Public padding ops: CFA-consistent mosaic padding and mirror padding
(reference :mod:`kpnt.ref.pad`)."""
from __future__ import annotations

import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ops.checks import check, check_image
from kpnt.ops.dispatch import implementation
from kpnt.ref.pad import mosaic_pads  # noqa: F401  (the padding geometry callers plan with)


def pad_mosaic(x: torch.Tensor, cfa: CFA, top: int, bottom: int, left: int, right: int, backend: str = "torch"):
    """CFA-consistent mirror padding; see :func:`kpnt.ref.pad.pad_mosaic`."""
    check_image(x, "mosaic", 1)
    check(min(top, bottom, left, right) >= 0, "pads", "non-negative", (top, bottom, left, right))
    return implementation("pad_mosaic", backend, x.device)(x, cfa, top, bottom, left, right)


def reflect_pad(x: torch.Tensor, top: int, bottom: int, left: int, right: int, backend: str = "torch"):
    """Mirror padding of any amount; see :func:`kpnt.ref.pad.reflect_pad`."""
    check_image(x, "image")
    check(min(top, bottom, left, right) >= 0, "pads", "non-negative", (top, bottom, left, right))
    return implementation("reflect_pad", backend, x.device)(x, top, bottom, left, right)
