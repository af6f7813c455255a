"""Public ops of kpnt: checked entry points that dispatch to the reference
(``backend='torch'``) or a registered fused backend (``'cuda'``).

One module per op (``kpnt/ops/<op>.py``), each beside its reference
(``kpnt/ref/<op>.py``) and, where fused, its kernels' glue
(``kpnt/ops/_cuda/<op>.py``); :mod:`.dispatch` chooses the backend,
:mod:`.capability` says what the fused kernels can run, :mod:`.weights`
packs MLP weights once per forward.
"""
from kpnt.ops.colour_base import colour_base
from kpnt.ops.colour_level import colour_level
from kpnt.ops.detail_var import detail_var
from kpnt.ops.dispatch import BACKENDS, OPS, register_backend, resolve_backend
from kpnt.ops.front_level import front_level
from kpnt.ops.guide import guide
from kpnt.ops.mlp import mlp
from kpnt.ops.pad import pad_mosaic, reflect_pad
from kpnt.ops.pyramid import pyramid_down, pyramid_up
from kpnt.ops.up_block import up_block
from kpnt.ops.weights import MlpWeights, MlpWeightSets

__all__ = [
    "BACKENDS", "MlpWeightSets", "MlpWeights", "OPS", "colour_base", "colour_level", "detail_var", "front_level",
    "guide", "mlp", "pad_mosaic", "pyramid_down", "pyramid_up", "reflect_pad", "register_backend", "resolve_backend",
    "up_block",
]
