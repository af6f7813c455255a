"""Where the front level's taps and weight sets sit in a CFA repeat.

Per position of a CFA's repeat: the weight set (site class under
'symmetry' sharing, reference-phase position under 'none'), the tap offsets
(canonical orientation, or the raster square), and the output channel of
each per-channel kernel role.  Pure data (numpy, cached per pattern): the
reference (:mod:`kpnt.ref.front`) and the fused kernels' tables
(:mod:`kpnt.ops._cuda.front_level`) read the same arrays.  Sharing 'none'
is explained in :mod:`kpnt.ref.front`'s module doc.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from kpnt.mosaic.cfa import CFA, CFAError, CLASS_NAMES, COLOUR_NAMES, reference_cfa
from kpnt.ref.taps import square_taps
from kpnt.spec import FRONT_SHARINGS


def _check_sharing(sharing: str) -> None:
    if sharing not in FRONT_SHARINGS:
        raise ValueError(f"front sharing must be one of {FRONT_SHARINGS}, got {sharing!r}")


@lru_cache(maxsize=4)
def _reference_positions(kind: str) -> tuple[tuple[tuple[int, int], ...], dict]:
    """Distinct site positions of the kind's reference phase: the first
    position in raster order of every distinct crop pattern, and a map from
    a crop's pattern bytes to its set index."""
    ref = reference_cfa(kind)
    reps, key = [], {}
    for y in range(ref.period):
        for x in range(ref.period):
            k = ref.crop(y, x).pattern.tobytes()
            if k not in key:
                key[k] = len(reps)
                reps.append((y, x))
    return tuple(reps), key


def front_set_names(kind: str, sharing: str = "symmetry") -> tuple[str, ...]:
    """Names of the front weight sets, in the order ``weights`` takes them.

    'symmetry': the site classes (``CLASS_NAMES``).  'none': one per
    distinct position of the reference phase, colour letter and (row,
    column) there, e.g. Bayer ``('R00', 'G01', 'G10', 'B11')``, X-Trans 18
    names from ``'G00'`` to ``'G25'`` (module doc)."""
    _check_sharing(sharing)
    if sharing == "symmetry":
        return CLASS_NAMES[kind]
    ref = reference_cfa(kind)
    reps, _ = _reference_positions(kind)
    return tuple(f"{COLOUR_NAMES[int(ref.pattern[y, x])]}{y}{x}" for y, x in reps)


@lru_cache(maxsize=256)
def _front_layout(pattern: bytes, period: int, radius: int, sharing: str) -> tuple[np.ndarray, np.ndarray]:
    cfa = CFA(np.frombuffer(pattern, dtype=np.int64).reshape(period, period))
    taps = square_taps(radius)
    if sharing == "symmetry":
        sets, offsets = cfa.site_class.copy(), cfa.canonical_offsets(taps)
    else:
        _, key = _reference_positions(cfa.kind)
        sets = np.empty((period, period), dtype=np.int64)
        for y in range(period):
            for x in range(period):
                k = key.get(cfa.crop(y, x).pattern.tobytes())
                if k is None:
                    raise CFAError(f"front_sharing='none' keys its weight sets by the position in the reference "
                                   f"{cfa.kind} phase ({cfa.sensor_kind.reference_name}); {cfa.name} is no phase of it")
                sets[y, x] = k
        offsets = np.broadcast_to(taps, (period, period) + taps.shape).copy()
    sets.setflags(write=False)
    offsets.setflags(write=False)
    return sets, offsets


def front_layout(cfa: CFA, radius: int, sharing: str = "symmetry") -> tuple[np.ndarray, np.ndarray]:
    """Weight set and tap offsets of every position of ``cfa``'s repeat.

    Returns:
        ``(sets, offsets)``: sets (P, P) index into :func:`front_set_names`;
        offsets (P, P, T, 2): tap t of the site at repeat position (y, x)
        lies at (y, x) + offsets[y, x, t].  'symmetry': the site class and
        the canonical offsets (``cfa.canonical_offsets``); 'none': the
        reference-phase position (module doc) and the raster square.
    """
    _check_sharing(sharing)
    return _front_layout(cfa.pattern.tobytes(), cfa.period, int(radius), sharing)


@lru_cache(maxsize=256)
def _front_roles(pattern: bytes, period: int, radius: int, sharing: str) -> np.ndarray:
    cfa = CFA(np.frombuffer(pattern, dtype=np.int64).reshape(period, period))
    _, offsets = front_layout(cfa, radius, sharing)
    roles = np.empty((period, period, 3), dtype=np.int64)
    for y in range(period):
        for x in range(period):
            order = [int(cfa.pattern[y, x])]
            for dy, dx in offsets[y, x]:
                c = int(cfa.pattern[(y + dy) % period, (x + dx) % period])
                if c not in order:
                    order.append(c)
            if len(order) != 3:
                raise CFAError(f"front radius {radius}: the taps of site ({y}, {x}) of {cfa.name} miss a colour")
            roles[y, x] = order
    roles.setflags(write=False)
    return roles


def front_roles(cfa: CFA, radius: int, sharing: str = "symmetry") -> np.ndarray:
    """(P, P, 3): the output channel of each kernel role at every position of
    ``cfa``'s repeat ('per_channel' front kernels).

    Role 0 is the site's own colour; roles 1 and 2 are the other two colours
    in the order they first appear among the site's taps in canonical order
    (:func:`front_layout`).  Sites of one weight set have the same canonical
    layout up to the red/blue swap, so a role means the same thing at all of
    them (own colour; the colour at the first canonical position that is not
    the own colour; the remaining one), as the set's weights need: no role is
    tied to the names red or blue."""
    _check_sharing(sharing)
    return _front_roles(cfa.pattern.tobytes(), cfa.period, int(radius), sharing)

