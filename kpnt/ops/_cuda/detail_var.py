""":func:`kpnt.ref.noise.detail_var` capturable in a CUDA graph."""
from __future__ import annotations

import torch
from torch import Tensor

from kpnt.ref._cache import tensor_cache


@tensor_cache(256)
def _detail_var_consts(counts: tuple, level: int, h: int, w: int, dtype, device: str) -> tuple[Tensor, Tensor]:
    """The two constant tensors of :func:`kpnt.ref.noise.detail_var` (counts
    as (1, 3, 1, 1), the pyramid gain map (1, 1, h, w)), built once per
    (counts, level, size): the reference makes both from host data on every
    call, a host-to-device copy that waits for the stream and so cannot be
    captured in a CUDA graph."""
    from kpnt.ref.pyramid import gain_map

    n = torch.as_tensor(counts, dtype=dtype, device=device).reshape(1, 3, 1, 1)
    return n, gain_map(level, h, w, dtype, device)


def capturable_detail_var(signal: Tensor, noise: Tensor, counts, level: int) -> Tensor:
    """:func:`kpnt.ref.noise.detail_var` with its constants cached on the
    device: the same arithmetic in the same order (bitwise the reference's
    result), and no host-to-device copy per call, so a training step that
    runs it can be captured in a CUDA graph (:mod:`kpnt.train.graph_step`)."""
    from kpnt.ref.noise import site_var

    if isinstance(counts, Tensor):      # device counts: nothing to cache by value
        from kpnt.ref.noise import detail_var

        return detail_var(signal, noise, counts, level)
    h, w = signal.shape[-2:]
    n, gain = _detail_var_consts(tuple(float(c) for c in counts), int(level), int(h), int(w), signal.dtype,
                                 str(signal.device))
    a = noise[:, 0, :, None, None]
    b = noise[:, 1, :, None, None]
    return site_var(signal, a, b) / n * gain
