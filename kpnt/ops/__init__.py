"""Public ops of kpnt: checked entry points that dispatch to the reference
(``backend='torch'``) or a registered fused backend (``'cuda'``)."""
from kpnt.ops.dispatch import (
    BACKENDS,
    OPS,
    colour_base,
    colour_level,
    detail_var,
    front_level,
    mlp,
    pad_mosaic,
    pyramid_down,
    pyramid_up,
    reflect_pad,
    register_backend,
    resolve_backend,
    up_block,
)

__all__ = [
    "BACKENDS", "OPS", "colour_base", "colour_level", "detail_var", "front_level", "mlp", "pad_mosaic",
    "pyramid_down", "pyramid_up", "reflect_pad", "register_backend", "resolve_backend", "up_block",
]
