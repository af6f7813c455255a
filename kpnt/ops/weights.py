"""MLP weights as the fused kernels take them, packed once per forward.

The fused ops read one contiguous float16 buffer per weight set (matrices
packed row-major one after the other; G sets as a (G, n_weights) matrix).
:class:`MlpWeights` (one set) and :class:`MlpWeightSets` (one set per site
class) wrap the matrices and make the packed float32 vector (differentiable:
its gradient flows back to the matrices) and its float16 copy on first use,
then keep them: :class:`kpnt.model.KPNT` wraps its weights once per forward,
so the colour set, used by all four levels, is packed and converted once
instead of four times.  Both behave as the plain sequences the reference
takes (matrices; sets of matrices), so the reference runs on them unchanged.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from kpnt.spec import MlpShape


class MlpWeights(Sequence):
    """One weight set ``[W0 (hidden, in), ..., Wout (out, hidden)]``."""

    def __init__(self, mats: Sequence[Tensor]):
        self.mats = list(mats)
        self._flat: Tensor | None = None
        self._half: Tensor | None = None

    def __len__(self) -> int:
        return len(self.mats)

    def __getitem__(self, i):
        return self.mats[i]

    @property
    def shape(self) -> MlpShape:
        return MlpShape.of(self.mats)

    def packed(self) -> Tensor:
        """(n_weights,) float32, the matrices row-major back to back."""
        if self._flat is None:
            self._flat = torch.cat([m.reshape(-1) for m in self.mats])
        return self._flat

    def half(self) -> Tensor:
        """(n_weights,) float16 copy of :meth:`packed` (no gradient)."""
        if self._half is None:
            self._half = self.packed().detach().to(torch.float16)
        return self._half


class MlpWeightSets(Sequence):
    """G weight sets of one shape (one per site class of the front level)."""

    def __init__(self, sets: Sequence[Sequence[Tensor]]):
        self.sets = [s if isinstance(s, MlpWeights) else MlpWeights(s) for s in sets]
        self._flat: Tensor | None = None
        self._half: Tensor | None = None

    def __len__(self) -> int:
        return len(self.sets)

    def __getitem__(self, i):
        return self.sets[i]

    def packed(self) -> Tensor:
        """(G, n_weights) float32."""
        if self._flat is None:
            self._flat = torch.stack([s.packed() for s in self.sets])
        return self._flat

    def half(self) -> Tensor:
        """(G, n_weights) float16 copy of :meth:`packed` (no gradient)."""
        if self._half is None:
            self._half = self.packed().detach().to(torch.float16)
        return self._half


def as_weights(w) -> MlpWeights:
    """``w`` as :class:`MlpWeights` (wrapped if a plain sequence)."""
    return w if isinstance(w, MlpWeights) else MlpWeights(w)


def as_weight_sets(ws) -> MlpWeightSets:
    """``ws`` as :class:`MlpWeightSets` (wrapped if a plain sequence of sets)."""
    return ws if isinstance(ws, MlpWeightSets) else MlpWeightSets(ws)


def needs_weight_grad(weights) -> bool:
    """True if autograd will want gradients of any matrix of ``weights``
    (a set, or a sequence of sets)."""
    if not torch.is_grad_enabled():
        return False
    flat = [w for ws in weights for w in (ws if isinstance(ws, (list, tuple, MlpWeights)) else [ws])]
    return any(w.requires_grad for w in flat)
