"""What the fused kernels can run: one table, read as data.

The table is ``kernels/shapes.def``, the list the CUDA build instantiates
the kernels from.  Once the extension is loaded, its ``shape_table()``
(generated from the same lines at compile time) replaces the parsed file, so
a stale checkout and a stale build cannot disagree silently: the loaded
extension is what runs.  On a machine without the extension (CPU) the file
itself is parsed.  Nothing here repeats a shape.

Questions, all answered from an op's spec (:mod:`kpnt.spec`):

- :func:`colour_problem` / :func:`front_problem`: why the fused kernels
  cannot run this spec (forward, or ``training``: with weight gradients),
  or ``None``;
- :func:`config_problems`: the same for a whole ``ModelConfig``
  (``kpnt-train --backend cuda``, ``KPNT.backend = 'cuda'``);
- :func:`runs_fused`: does inference of a config run every fused part on
  the kernels (choosing the GPU tile size).

What is fixed in the kernels themselves, not in the list: the colour
level's tap *positions* (the 15-tap diamond, checked against
:data:`kpnt.ref.taps.DIAMOND` when the extension loads) and the front
level's symmetry sharing (one weight set per site class, taps in canonical
orientation).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from kpnt.spec import ColourLevelSpec, FrontLevelSpec, MlpShape

#: Colour tap set compiled into the fused colour level (its positions).
FUSED_COLOUR_TAPS = "diamond15"
#: Front weight-set sharing the fused front level implements.
FUSED_FRONT_SHARING = "symmetry"
#: File name of the shape list in the kernels directory.
SHAPES_FILE = "shapes.def"


@dataclass(frozen=True)
class FusedShape:
    """One line of ``kernels/shapes.def``.

    Attributes:
        op: 'colour' or 'front'.
        key: colour ``(taps,)``; front ``(radius, kernels)``
            (:meth:`kpnt.spec.FrontLevelSpec.fused_key`).
        mlp: the MLP shape.
        train: the backward is compiled too (else forward only).
    """

    op: str
    key: tuple[int, ...]
    mlp: MlpShape
    train: bool

    def __str__(self) -> str:
        what = (f"colour level, {self.key[0]} taps" if self.op == "colour"
                else f"front level, radius {self.key[0]}, {self.key[1]} kernel(s)")
        return f"{what}, MLP {self.mlp}{'' if self.train else ', forward only'}"


_ARITY = {"KPNT_COLOUR": ("colour", 1), "KPNT_FRONT": ("front", 2)}


def parse_shapes(text: str, where: str = SHAPES_FILE) -> tuple[FusedShape, ...]:
    """The shapes of a ``shapes.def`` text (module doc); a malformed line
    raises ``ValueError`` naming it."""
    out = []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        name, _, rest = line.partition("(")
        if name not in _ARITY or not rest.endswith(")"):
            raise ValueError(f"{where} line {n}: expected KPNT_COLOUR(...) or KPNT_FRONT(...), got {raw.strip()!r}")
        op, n_key = _ARITY[name]
        try:
            vals = [int(v) for v in rest[:-1].split(",")]
        except ValueError:
            raise ValueError(f"{where} line {n}: arguments must be integers, got {raw.strip()!r}") from None
        if len(vals) != n_key + 5:
            raise ValueError(f"{where} line {n}: {name} takes {n_key + 5} arguments, got {len(vals)}")
        out.append(FusedShape(op, tuple(vals[:n_key]), MlpShape(*vals[n_key:n_key + 4]), bool(vals[-1])))
    return tuple(out)


def from_extension(rows) -> tuple[FusedShape, ...]:
    """The shapes of the extension's ``shape_table()``: tuples
    ``(op, key0, key1, in, hidden, out, n_hidden, train)`` (colour: key1 0)."""
    out = []
    for op, k0, k1, *mlp, train in rows:
        key = (int(k0),) if op == "colour" else (int(k0), int(k1))
        out.append(FusedShape(str(op), key, MlpShape(*(int(v) for v in mlp)), bool(train)))
    return tuple(out)


_from_file: tuple[FusedShape, ...] | None = None
_loaded: tuple[FusedShape, ...] | None = None


def shapes_file() -> Path:
    """``kernels/shapes.def`` of the sources :mod:`kpnt._backend` builds."""
    from kpnt import _backend

    return _backend.kernels_dir() / SHAPES_FILE


def set_loaded(shapes: tuple[FusedShape, ...] | None) -> None:
    """Called by the CUDA backend's loader with the extension's table (or
    ``None`` to forget it, in tests)."""
    global _loaded
    _loaded = shapes


def shapes() -> tuple[FusedShape, ...]:
    """The compiled shapes: the loaded extension's, else ``kernels/shapes.def``."""
    global _from_file
    if _loaded is not None:
        return _loaded
    if _from_file is None:
        from kpnt import _backend

        path = shapes_file()
        if not path.is_file():
            raise _backend.BackendError(f"the fused kernels' shape list {path} is missing; set KPNT_KERNELS_DIR to "
                                        "the repository's kernels/ folder")
        _from_file = parse_shapes(path.read_text(), str(path))
    return _from_file


def _find(op: str, key: tuple, mlp: MlpShape) -> FusedShape | None:
    return next((s for s in shapes() if s.op == op and s.key == key and s.mlp == mlp), None)


def _compiled(op: str) -> str:
    return "; ".join(str(s) for s in shapes() if s.op == op) or "none"


def colour_problem(spec: ColourLevelSpec, training: bool = False) -> str | None:
    """Why the fused colour level cannot run ``spec`` (``training``: with
    weight gradients), or ``None``."""
    if spec.taps != FUSED_COLOUR_TAPS:
        return f"colour_taps={spec.taps!r} (the fused colour level has the {FUSED_COLOUR_TAPS} taps compiled in)"
    T = spec.widths()[0]
    found = _find("colour", (T,), spec.mlp)
    if found is None:
        return f"colour MLP {spec.mlp} is not compiled (compiled: {_compiled('colour')}; kernels/shapes.def)"
    if training and not found.train:
        return f"colour MLP {spec.mlp} is compiled forward only (inference), and this call needs weight gradients"
    return None


def front_problem(spec: FrontLevelSpec, training: bool = False) -> str | None:
    """Why the fused front level cannot run ``spec`` (``training``: with
    weight gradients), or ``None``."""
    if spec.sharing != FUSED_FRONT_SHARING:
        return f"front_sharing={spec.sharing!r} (the fused front level runs {FUSED_FRONT_SHARING} sharing only)"
    found = _find("front", spec.fused_key(), spec.mlp)
    if found is None:
        return (f"front_radius={spec.radius}, front_kernels={spec.kernels!r} with front MLP {spec.mlp} is not compiled "
                f"(compiled: {_compiled('front')}; kernels/shapes.def)")
    if training and not found.train:
        return (f"front_kernels={spec.kernels!r} with front MLP {spec.mlp} is compiled forward only (inference), "
                "and this call needs weight gradients")
    return None


def mlp_problem(shape: MlpShape, training: bool = False) -> str | None:
    """Why the plain fused MLP op cannot run ``shape``, or ``None``: it runs
    every shape of the list (forward; backward where that line trains)."""
    found = [s for s in shapes() if s.mlp == shape]
    if not found:
        listed = ", ".join(sorted({str(s.mlp) for s in shapes()}))
        return f"MLP {shape} is not compiled (compiled: {listed}; kernels/shapes.def)"
    if training and not found[0].train:
        return f"MLP {shape} is compiled forward only (inference), and this call needs weight gradients"
    return None


def config_problems(config, training: bool = False) -> list[str]:
    """Why the fused kernels cannot run a :class:`kpnt.model.ModelConfig`
    (empty: they can run all of it); ``training``: with weight gradients."""
    out = [colour_problem(config.colour_spec, training), front_problem(config.front_spec, training)]
    return [p for p in out if p is not None]


def runs_fused(config, backend: str, device) -> bool:
    """True if inference of a ``ModelConfig`` on ``device`` with ``backend``
    runs every fused part (colour and front levels) on the kernels: the
    backend resolves to 'cuda' (loading the kernels) and nothing in
    :func:`config_problems`.  Only for choosing defaults (e.g. the GPU tile
    size): the ops decide for themselves per call."""
    from kpnt.ops.dispatch import resolve_backend

    device = torch.device(device)
    if device.type != "cuda" or resolve_backend(backend, device) != "cuda":
        return False
    return not config_problems(config)
