"""Public colour-base op (reference :mod:`kpnt.ref.colour_base`)."""
from __future__ import annotations

import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ops.checks import check, check_image
from kpnt.ops.dispatch import implementation


def colour_base(x: torch.Tensor, cfa: CFA, backend: str = "torch") -> torch.Tensor:
    """(N,1,H,W) mosaic -> (N,3,H/b,W/b) colour base; see :mod:`kpnt.ref.colour_base`."""
    check_image(x, "mosaic", 1)
    b = cfa.block
    check(x.shape[-2] % b == 0 and x.shape[-1] % b == 0, "mosaic size", f"multiples of the block size {b}",
          tuple(x.shape[-2:]))
    check(cfa.block_phase == (0, 0), "CFA block phase", "(0, 0) (pad or crop the mosaic so blocks start at the origin)",
          cfa.block_phase)
    return implementation("colour_base", backend, x.device)(x, cfa)
