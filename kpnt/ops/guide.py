"""The guide op (issue 13): the convolutional demosaicer whose residual
sharpens the front level's smooth estimate (reference and maths:
:mod:`kpnt.ref.guide`).

One implementation on every device: PyTorch convolutions (cuDNN on a GPU,
half precision at inference there, each layer's bias and ReLU fused into
its convolution by cuDNN), so the 'torch', 'cuda' and 'auto' backends all
run the same code and no kernel of kpnt's own is needed.
"""
from __future__ import annotations

import torch

from kpnt.ref.guide import guide_residual


def guide(x: torch.Tensor, U: torch.Tensor, noise: torch.Tensor, cfa, weights, skip: bool = False,
          pack: int = 1, train_dtype: torch.dtype | None = None, proj: bool = False) -> torch.Tensor:
    """``U + R``: the smooth estimate corrected by the guide (shapes and
    ``train_dtype``, ``proj`` as :func:`kpnt.ref.guide.guide_residual`)."""
    if x.dim() != 4 or x.shape[1] != 1 or U.shape[1] != 3 or U.shape[-2:] != x.shape[-2:]:
        raise ValueError(f"guide: x (N, 1, H, W) and U (N, 3, H, W) of one size, got {tuple(x.shape)} and {tuple(U.shape)}")
    return U + guide_residual(x, U, noise, cfa, weights, skip, pack, train_dtype, proj)
