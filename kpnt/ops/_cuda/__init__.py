"""Autograd glue of kpnt's fused CUDA kernels, one module per op:
:mod:`.mlp` (plain and grouped MLP), :mod:`.colour_level`,
:mod:`.front_level`, :mod:`.detail_var`, :mod:`.guide_block` (the
guide's projection block, inference only), :mod:`.guide_start`,
:mod:`.guide_finish`, :mod:`.up_block` and :mod:`.pyramid` (inference; the
reference where autograd needs a backward); :mod:`.ext` holds the extension
handle and the shared constants, :mod:`.glue` the by-name gradient helpers.

Each fused op takes the reference's arguments ``(tensors..., spec)``;
:func:`backend_ops` is the table :mod:`kpnt.ops` registers as the
``'cuda'`` backend.
"""
from __future__ import annotations

from kpnt import _backend
from kpnt.ops._cuda.colour_level import colour_level as fused_colour_level
from kpnt.ops._cuda.detail_var import capturable_detail_var
from kpnt.ops._cuda.extension import ext
from kpnt.ops._cuda.front_level import front_level as fused_front_level
from kpnt.ops._cuda.guide_block import fused_proj_block
from kpnt.ops._cuda.guide_finish import fused_guide_finish
from kpnt.ops._cuda.guide_start import fused_guide_start
from kpnt.ops._cuda.guide_train import fused_guide_network
from kpnt.ops._cuda.mlp import dispatch_mlp, fused_mlp, fused_mlp_grouped, mlp_dims, partition_by_class
from kpnt.ops._cuda.pyramid import fused_pyramid_down, fused_pyramid_up
from kpnt.ops._cuda.up_block import fused_up_block

__all__ = ["backend_ops", "capturable_detail_var", "ext", "fused_colour_level", "fused_front_level",
           "fused_guide_finish", "fused_guide_network", "fused_guide_start", "fused_mlp", "fused_mlp_grouped", "fused_proj_block",
           "fused_pyramid_down", "fused_pyramid_up", "fused_up_block", "mlp_dims", "partition_by_class", "shape_table"]


def shape_table():
    """The compiled shapes as the extension reports them (builds it):
    ``[(op, key0, key1, in, hidden, out, n_hidden, train), ...]``, generated
    from ``kernels/shapes.def`` (:mod:`kpnt.ops.capability`)."""
    return ext().shape_table()


def backend_ops() -> dict:
    """Op table that ``kpnt.ops`` registers as the ``'cuda'`` backend.

    Builds the kernels first, so that a missing GPU or compiler surfaces as a
    :class:`kpnt._backend.BackendError` when the backend is first used, and
    checks that the compiled colour taps are the reference's diamond.  Fused:
    the MLP, the colour level, the mosaic front level, the guide's
    projection block (inference, width 64), its first and last steps (guide_start, guide_finish:
    inference), up_block and the pyramid (inference; the pyramid behind
    :data:`kpnt.ops._cuda.pyramid.FUSED`); ``detail_var`` is
    the reference's arithmetic with its constants cached on the device
    (capturable in a CUDA graph); the other ops (padding, colour base) are
    the reference's.
    """
    from kpnt.ref.taps import DIAMOND

    taps = [tuple(t) for t in ext().colour_taps()]
    if taps != [tuple(int(v) for v in t) for t in DIAMOND]:
        raise _backend.BackendError(
            f"the compiled colour taps {taps} differ from kpnt.ref.taps.DIAMOND: rebuild the kernels"
        )
    return {"mlp": dispatch_mlp, "colour_level": fused_colour_level, "front_level": fused_front_level,
            "detail_var": capturable_detail_var, "guide_proj_block": fused_proj_block,
            "up_block": fused_up_block, "guide_start": fused_guide_start, "guide_finish": fused_guide_finish,
            "guide_network": fused_guide_network,
            "pyramid_down": fused_pyramid_down, "pyramid_up": fused_pyramid_up}
