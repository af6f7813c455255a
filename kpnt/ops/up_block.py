"""Public up_block op (reference :func:`kpnt.ref.up_block.up_block`)."""
from __future__ import annotations

import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ops.checks import check, check_image
from kpnt.ops.dispatch import implementation


def up_block(o0: torch.Tensor, cfa: CFA, backend: str = "torch") -> torch.Tensor:
    """(N,3,h,w) -> (N,3,h*b,w*b); see :func:`kpnt.ref.up_block.up_block`."""
    check_image(o0, "colour base", 3)
    check(cfa.block_phase == (0, 0), "CFA block phase", "(0, 0)", cfa.block_phase)
    return implementation("up_block", backend, o0.device)(o0, cfa)
