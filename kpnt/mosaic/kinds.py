"""Sensor kinds: everything kpnt knows about a CFA family, in one table.

Every module that needs to know something about "Bayer" or "X-Trans" asks
this registry (:func:`kind`, :func:`kind_of_period`, :data:`MOSAIC_KINDS`)
instead of comparing names: the period and colour-base block, the site-class
names and how classes are told apart, the reference phase (canonical
layouts, 'none'-sharing keys, weights metadata), how training draws a
random phase, the statistics block of the dataset tools, and the file name
of the shipped weights.  A new layout (say Quad Bayer) is a new entry here
plus whatever its class rule needs in :meth:`kpnt.mosaic.cfa.CFA.site_class`.

The kind of a :class:`kpnt.mosaic.cfa.CFA` follows from its period (each
kind's period is unique).  ``'rgb'`` (:data:`RGB`) is the demosaiced-input
model, no CFA: it is a sensor of the model (:data:`SENSORS`) but no kind.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

import numpy as np

from kpnt.errors import ConfigError

#: The sensor of models that read demosaiced RGB (no CFA).
RGB = "rgb"


@dataclass(frozen=True)
class SensorKind:
    """One CFA family.

    Attributes:
        name: the kind's name (``CFA.kind``, ``--sensor``, weights metadata).
        label: for people ('Bayer').
        reference: the reference phase, rows of colour indices (R=0, G=1,
            B=2): canonical layouts are those of its sites, and every other
            phase of the kind is a crop (or flip) of it.
        reference_name: how messages name the reference phase.
        block: side of the colour base's block (DESIGN.md section 2).
        class_names: photosite classes, in class-index order (one front
            weight set each under symmetry sharing).
        classes_by: how classes are told apart: 'colour' (green / the rest)
            or 'block' (position in the colour-base block: corner, centre,
            side).
        name_sep: joins the pattern rows into ``CFA.name`` ('RGGB', or
            'GGRGGB/GGBGGR/...').
        stats_block: side of the dataset tools' statistics blocks
            (whole repeats with enough sites of every colour).
        preview_radius: radius of the tent with which the dataset aligner's
            cheap preview demosaic spreads each colour's photosites (X-Trans's
            sparser colours need the reach).
        align_tile: side of the dataset aligner's search tiles (whole
            repeats).
    """

    name: str
    label: str
    reference: tuple[tuple[int, ...], ...]
    reference_name: str
    block: int
    class_names: tuple[str, ...]
    classes_by: str
    name_sep: str
    stats_block: int
    preview_radius: int
    align_tile: int

    @property
    def period(self) -> int:
        """Side of the repeat."""
        return len(self.reference)

    def reference_pattern(self) -> np.ndarray:
        """(P, P) int64 copy of :attr:`reference`."""
        return np.array(self.reference, dtype=np.int64)

    @property
    def weights_file(self) -> str:
        """File name of the shipped weights (``kpnt/weights/``)."""
        return f"{self.name}.safetensors"


BAYER = SensorKind(
    name="bayer", label="Bayer", reference=((0, 1), (1, 2)), reference_name="RGGB", block=2,
    class_names=("green", "red/blue"), classes_by="colour", name_sep="", stats_block=4,
    preview_radius=1, align_tile=8,
)
XTRANS = SensorKind(
    name="xtrans", label="X-Trans",
    # As LibRaw reports it for the X-T1 and other X-Trans bodies.
    reference=((1, 1, 0, 1, 1, 2), (1, 1, 2, 1, 1, 0), (2, 0, 1, 0, 2, 1),
               (1, 1, 2, 1, 1, 0), (1, 1, 0, 1, 1, 2), (0, 2, 1, 2, 0, 1)),
    reference_name="CFA.xtrans()", block=3,
    class_names=("corner green", "centre green", "side red/blue"), classes_by="block", name_sep="/", stats_block=6,
    preview_radius=2, align_tile=12,
)

#: The registry, by name.
KINDS: dict[str, SensorKind] = {k.name: k for k in (BAYER, XTRANS)}
#: Names of the mosaic kinds, in registry order (CLI choices, loops over kinds).
MOSAIC_KINDS: tuple[str, ...] = tuple(KINDS)
#: What a model can be built for: every mosaic kind, and demosaiced RGB.
SENSORS: tuple[str, ...] = (*MOSAIC_KINDS, RGB)
#: Training draws a phase offset below this, then takes it modulo the kind's
#: period: one draw for every kind (the least common multiple of the
#: periods), so adding a kind of a period that divides it leaves the random
#: streams of existing runs unchanged.
PHASE_DRAW = reduce(lambda a, b: a * b // math.gcd(a, b), (k.period for k in KINDS.values()))


def kind(name: str) -> SensorKind:
    """The kind called ``name``; a one-line :class:`kpnt.errors.ConfigError`
    naming the known kinds otherwise."""
    try:
        return KINDS[name]
    except KeyError:
        raise ConfigError(f"unknown sensor kind {name!r}: expected one of {MOSAIC_KINDS}") from None


def kind_of_period(period: int) -> SensorKind:
    """The kind whose repeat has side ``period``."""
    for k in KINDS.values():
        if k.period == period:
            return k
    raise ConfigError(f"no sensor kind has a {period}x{period} repeat "
                      f"(known: {', '.join(f'{k.name} {k.period}x{k.period}' for k in KINDS.values())})")


def period_of(sensor: str) -> int:
    """CFA period of a model's sensor (1 for :data:`RGB`)."""
    return 1 if sensor == RGB else kind(sensor).period
