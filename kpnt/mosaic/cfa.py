"""The colour filter array as data.

A :class:`CFA` describes one sensor layout: the repeat pattern (colour index
per position, R=0 G=1 B=2, as ``rawpy``'s ``raw_pattern`` after mapping its
second green to 1), the block size of the colour base, the site class of every
position and the dihedral transform that brings each site's neighbourhood to
its class's canonical orientation (DESIGN.md sections 1 and 3).

Nothing here branches on "which Bayer phase": the classes and transforms are
derived from the pattern array by search, so every phase of Bayer and every
6x6 phase of X-Trans is handled by the same code, and a crop or a flip simply
yields a new pattern from which everything is derived again.

Example::

    >>> cfa = CFA.from_pattern([[0, 1], [1, 2]])      # RGGB
    >>> cfa.kind, cfa.period, cfa.block, cfa.n_classes
    ('bayer', 2, 2, 2)
    >>> cfa.crop(0, 1).name                            # one column in: GRBG
    'GRBG'
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from kpnt.mosaic import kinds as _kinds

R, G, B = 0, 1, 2
COLOUR_NAMES = "RGB"

#: The eight elements of the dihedral group of the square as 2x2 integer
#: matrices ``M``: a canonical offset ``c`` (dy, dx) sits at the actual offset
#: ``M @ c`` from the site.  Identity first so that a site already in
#: canonical orientation keeps it; then transpose, mirrors, rotations.
D4 = np.array(
    [
        [[1, 0], [0, 1]],    # identity
        [[0, 1], [1, 0]],    # transpose
        [[1, 0], [0, -1]],   # mirror left-right
        [[-1, 0], [0, 1]],   # mirror up-down
        [[-1, 0], [0, -1]],  # rotate 180
        [[0, -1], [-1, 0]],  # anti-transpose
        [[0, -1], [1, 0]],   # rotate 90
        [[0, 1], [-1, 0]],   # rotate 270
    ],
    dtype=np.int64,
)

#: Class names per sensor kind, in class-index order (from the registry,
#: :mod:`kpnt.mosaic.kinds`).
CLASS_NAMES = {name: k.class_names for name, k in _kinds.KINDS.items()}

#: Radius of the neighbourhood on which canonical orientation is decided.
#: 6 covers a whole X-Trans repeat on each side of the site.
_MATCH_RADIUS = 6


class CFAError(ValueError):
    """A pattern that kpnt does not support (neither Bayer nor X-Trans)."""


def _swap_rb(colours: np.ndarray) -> np.ndarray:
    out = colours.copy()
    out[colours == R] = B
    out[colours == B] = R
    return out


@dataclass(frozen=True, eq=False)
class CFA:
    """A colour filter array layout and everything derived from it.

    Attributes:
        pattern: (P, P) int array, colour of each position of the repeat
            (0 R, 1 G, 2 B); position (0, 0) is the top-left photosite of the
            image this CFA describes.
    """

    pattern: np.ndarray
    _hash: int = field(init=False, repr=False)

    # ------------------------------------------------------------------
    # construction
    # ------------------------------------------------------------------
    def __post_init__(self):
        pat = np.asarray(self.pattern, dtype=np.int64)
        if pat.ndim != 2 or pat.shape[0] != pat.shape[1]:
            raise CFAError(f"CFA pattern must be square, got shape {pat.shape}")
        if not np.isin(pat, (R, G, B)).all():
            raise CFAError(f"CFA pattern may only hold 0 (R), 1 (G), 2 (B), got {np.unique(pat).tolist()}")
        pat.setflags(write=False)
        object.__setattr__(self, "pattern", pat)
        object.__setattr__(self, "_hash", hash(pat.tobytes()))
        self._validate()

    @classmethod
    def from_pattern(cls, pattern) -> "CFA":
        """Build from a colour array (0 R, 1 G, 2 B), reduced to its period."""
        pat = np.asarray(pattern, dtype=np.int64)
        # rawpy can hand a 2x2 Bayer pattern as a larger repeated tile.
        for p in sorted({k.period for k in _kinds.KINDS.values()}):
            if pat.shape[0] % p == 0 and pat.shape[1] % p == 0 and pat.shape[0] >= p:
                tile = pat[:p, :p]
                if np.array_equal(np.tile(tile, (pat.shape[0] // p, pat.shape[1] // p)), pat):
                    return cls(tile)
        return cls(pat)

    @classmethod
    def from_rawpy(cls, raw_pattern, color_desc: bytes | str) -> "CFA":
        """Build from rawpy's ``raw_pattern`` (indices into ``color_desc``)."""
        desc = color_desc.decode() if isinstance(color_desc, bytes) else color_desc
        lut = []
        for ch in desc:
            if ch not in "RGB":
                raise CFAError(f"unsupported colour filter '{ch}' in CFA description {desc!r} (only R, G, B)")
            lut.append("RGB".index(ch))
        pat = np.asarray(raw_pattern)
        if pat.max() >= len(lut):
            raise CFAError(f"raw_pattern index {int(pat.max())} outside colour description {desc!r}")
        return cls.from_pattern(np.asarray(lut)[pat])

    @classmethod
    def bayer(cls, phase: str = "RGGB") -> "CFA":
        """A Bayer CFA by name: RGGB, BGGR, GRBG or GBRG."""
        phase = phase.upper()
        if sorted(phase) != sorted("RGGB") or phase not in ("RGGB", "BGGR", "GRBG", "GBRG"):
            raise CFAError(f"unknown Bayer phase {phase!r}: expected RGGB, BGGR, GRBG or GBRG")
        return cls(np.array([COLOUR_NAMES.index(c) for c in phase]).reshape(2, 2))

    @classmethod
    def xtrans(cls, dy: int = 0, dx: int = 0) -> "CFA":
        """Fujifilm's X-Trans pattern (as LibRaw reports it for X-T1 and
        others), cropped by ``(dy, dx)`` to select one of its 36 phases."""
        return cls(_kinds.XTRANS.reference_pattern()).crop(dy, dx)

    # ------------------------------------------------------------------
    # identity
    # ------------------------------------------------------------------
    def __eq__(self, other):
        return isinstance(other, CFA) and np.array_equal(self.pattern, other.pattern)

    def __hash__(self):
        return self._hash

    def __repr__(self):
        return f"CFA({self.kind}, {self.name})"

    @property
    def period(self) -> int:
        """Size of the repeat (2 Bayer, 6 X-Trans)."""
        return self.pattern.shape[0]

    @property
    def sensor_kind(self) -> _kinds.SensorKind:
        """This layout's entry of the sensor-kind registry (by period)."""
        return _kinds.kind_of_period(self.period)

    @property
    def kind(self) -> str:
        """Name of the sensor kind (:data:`kpnt.mosaic.kinds.MOSAIC_KINDS`)."""
        return self.sensor_kind.name

    @property
    def name(self) -> str:
        """Bayer phase name (e.g. 'RGGB'); for X-Trans the rows joined by '/'."""
        rows = ["".join(COLOUR_NAMES[c] for c in row) for row in self.pattern]
        return self.sensor_kind.name_sep.join(rows)

    @property
    def block(self) -> int:
        """Block size of the colour base (2 Bayer, 3 X-Trans)."""
        return self.sensor_kind.block

    @property
    def n_classes(self) -> int:
        """Number of photosite classes (2 Bayer, 3 X-Trans)."""
        return len(CLASS_NAMES[self.kind])

    @property
    def class_names(self) -> tuple[str, ...]:
        return CLASS_NAMES[self.kind]

    # ------------------------------------------------------------------
    # validation and colour base
    # ------------------------------------------------------------------
    def _validate(self):
        pat = self.pattern
        counts = [int((pat == c).sum()) for c in (R, G, B)]
        if self.period == 2:
            if counts != [1, 2, 1]:
                raise CFAError(f"2x2 pattern {pat.tolist()} is not a Bayer layout (needs 1 R, 2 diagonal G, 1 B)")
            if not (pat[0, 0] == pat[1, 1] == G or pat[0, 1] == pat[1, 0] == G):
                raise CFAError(f"2x2 pattern {pat.tolist()} is not a Bayer layout (greens must be diagonal)")
        elif self.period == 6:
            if counts != [8, 20, 8]:
                raise CFAError(f"6x6 pattern has {counts} R/G/B sites, X-Trans has [8, 20, 8]")
            if self.block_phase is None:
                raise CFAError("6x6 pattern has no 3x3 block phase with green corners and centre: not X-Trans")
        else:
            raise CFAError(f"unsupported CFA period {self.period}: kpnt handles 2x2 Bayer and 6x6 X-Trans")

    @cached_property
    def block_phase(self) -> tuple[int, int] | None:
        """Offset (oy, ox) of the colour-base blocks.

        Bayer: (0, 0) (every aligned 2x2 block holds R, 2 G, B).  X-Trans: the
        3x3 block phase whose corners and centre are green (5 G, 2 R, 2 B);
        ``None`` if no such phase exists (only during validation).
        """
        if self.period == 2:
            return (0, 0)
        pat = self.pattern
        for oy in range(3):
            for ox in range(3):
                ok = True
                for by in range(2):
                    for bx in range(2):
                        blk = np.roll(pat, (-(oy + 3 * by), -(ox + 3 * bx)), axis=(0, 1))[:3, :3]
                        greens = [blk[0, 0], blk[0, 2], blk[2, 0], blk[2, 2], blk[1, 1]]
                        if not all(g == G for g in greens) or (blk == R).sum() != 2 or (blk == B).sum() != 2:
                            ok = False
                if ok:
                    return (oy, ox)
        return None

    @cached_property
    def base_counts(self) -> np.ndarray:
        """(3,) number of photosites of each colour averaged into one
        colour-base pixel: Bayer (1, 2, 1), X-Trans (2, 5, 2)."""
        b = self.block
        oy, ox = self.block_phase
        blk = np.roll(self.pattern, (-oy, -ox), axis=(0, 1))[:b, :b]
        return np.array([(blk == c).sum() for c in (R, G, B)], dtype=np.int64)

    def colour_at(self, y, x):
        """Colour index of photosite(s) (y, x) of the image (broadcasts)."""
        p = self.period
        return self.pattern[np.asarray(y) % p, np.asarray(x) % p]

    def colour_map(self, height: int, width: int) -> np.ndarray:
        """(H, W) colour index of every photosite of an image."""
        p = self.period
        reps = (-(-height // p), -(-width // p))
        return np.tile(self.pattern, reps)[:height, :width]

    # ------------------------------------------------------------------
    # geometry: crops and flips re-derive the pattern
    # ------------------------------------------------------------------
    def crop(self, y0: int, x0: int) -> "CFA":
        """CFA of the image cropped to start at photosite (y0, x0)."""
        return CFA(np.roll(self.pattern, (-y0, -x0), axis=(0, 1)))

    def flip(self, axis: int, size: int) -> "CFA":
        """CFA of an image of ``size`` photosites along ``axis`` (0 rows,
        1 columns) after mirroring it along that axis."""
        p = self.period
        idx = (size - 1 - np.arange(p)) % p
        pat = self.pattern[idx, :] if axis == 0 else self.pattern[:, idx]
        return CFA(pat)

    def transpose(self) -> "CFA":
        """CFA of the transposed image."""
        return CFA(self.pattern.T.copy())

    # ------------------------------------------------------------------
    # site classes and canonical orientation
    # ------------------------------------------------------------------
    def _neighbourhood(self, y: int, x: int, radius: int = _MATCH_RADIUS) -> np.ndarray:
        off = np.arange(-radius, radius + 1)
        return self.colour_at(y + off[:, None], x + off[None, :])

    @cached_property
    def site_class(self) -> np.ndarray:
        """(P, P) class index of every position of the repeat.

        Bayer: 0 green, 1 red/blue.  X-Trans, relative to the 3x3 block with
        green corners and centre: 0 corner green, 1 centre green, 2 side
        red/blue.
        """
        p = self.period
        cls = np.zeros((p, p), dtype=np.int64)
        if self.sensor_kind.classes_by == "colour":
            cls[self.pattern != G] = 1
            return cls
        oy, ox = self.block_phase
        for y in range(p):
            for x in range(p):
                by, bx = (y - oy) % 3, (x - ox) % 3
                if (by, bx) == (1, 1):
                    cls[y, x] = 1
                elif by != 1 and bx != 1:
                    cls[y, x] = 0
                else:
                    cls[y, x] = 2
        return cls

    @cached_property
    def canonical_site(self) -> np.ndarray:
        """(n_classes, 2) position (y, x) in the repeat of each class's
        canonical site: the first site of the class in raster order."""
        out = []
        for c in range(self.n_classes):
            ys, xs = np.nonzero(self.site_class == c)
            out.append((ys[0], xs[0]))
        return np.array(out, dtype=np.int64)

    def _transformed(self, y: int, x: int, m: np.ndarray, radius: int = _MATCH_RADIUS) -> np.ndarray:
        """Colour layout around (y, x) seen in the frame of D4 element m:
        out[cy, cx] = colour at (y, x) + m @ (cy, cx)."""
        off = np.arange(-radius, radius + 1)
        cy, cx = np.meshgrid(off, off, indexing="ij")
        ay = m[0, 0] * cy + m[0, 1] * cx
        ax = m[1, 0] * cy + m[1, 1] * cx
        return self.colour_at(y + ay, x + ax)

    @cached_property
    def _orientation(self) -> tuple[np.ndarray, np.ndarray]:
        p = self.period
        tf = np.full((p, p), -1, dtype=np.int64)
        swap = np.zeros((p, p), dtype=bool)
        for c in range(self.n_classes):
            # The canonical layout comes from the reference phase of this
            # kind, not from this phase's first site: otherwise two crops of
            # one sensor would orient a class differently and one weight set
            # could not serve every phase (X-Trans has 4 corner-green frames).
            ref = _reference_layout(self.kind, c)
            ref_swapped = _swap_rb(ref)
            for y, x in zip(*np.nonzero(self.site_class == c)):
                # Prefer an exact match, then one up to the red/blue swap.
                for want_swap, target in ((False, ref), (True, ref_swapped)):
                    hit = next((k for k, m in enumerate(D4) if np.array_equal(self._transformed(y, x, m), target)), None)
                    if hit is not None:
                        tf[y, x], swap[y, x] = hit, want_swap
                        break
                else:
                    raise CFAError(f"site ({y}, {x}) of {self.name} matches no orientation of its class")
        return tf, swap

    @property
    def transform(self) -> np.ndarray:
        """(P, P) index into :data:`D4` of each site's canonical transform:
        canonical offset ``c`` of the site is at actual offset ``D4[k] @ c``."""
        return self._orientation[0]

    @property
    def swap_rb(self) -> np.ndarray:
        """(P, P) bool: after the canonical transform the site's neighbourhood
        equals its class's canonical layout with red and blue exchanged."""
        return self._orientation[1]

    def canonical_offsets(self, taps: np.ndarray) -> np.ndarray:
        """Actual offsets of canonical taps for every position of the repeat.

        Args:
            taps: (T, 2) canonical tap offsets (dy, dx).
        Returns:
            (P, P, T, 2) int array: tap t of the site at repeat position
            (y, x) lies at (y, x) + out[y, x, t].
        """
        taps = np.asarray(taps, dtype=np.int64)
        mats = D4[self.transform]                       # (P, P, 2, 2)
        return np.einsum("yxij,tj->yxti", mats, taps)

    def canonical_colours(self, taps: np.ndarray) -> np.ndarray:
        """(n_classes, T) colour of each canonical tap at the class's
        canonical site (of the reference phase of this kind, so the same for
        every phase); a site with ``swap_rb`` sees R and B exchanged."""
        taps = np.asarray(taps, dtype=np.int64)
        ref = reference_cfa(self.kind)
        out = np.zeros((self.n_classes, len(taps)), dtype=np.int64)
        for c in range(self.n_classes):
            y, x = ref.canonical_site[c]
            out[c] = ref.colour_at(y + taps[:, 0], x + taps[:, 1])
        return out

    def to_json(self) -> dict:
        """A JSON-friendly description (for weight and dataset metadata)."""
        return {"kind": self.kind, "pattern": self.pattern.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> "CFA":
        return cls.from_pattern(d["pattern"])


def reference_cfa(kind: str) -> CFA:
    """The reference phase of a sensor kind (:mod:`kpnt.mosaic.kinds`), whose
    canonical sites define each class's canonical layout for every phase of
    ``kind``: RGGB, and the X-Trans pattern as LibRaw reports it for the X-T1
    (:meth:`CFA.xtrans` with no crop).  Also the CFA recorded in weights
    metadata and the key of 'none' front sharing."""
    if kind not in _REFERENCE:
        _REFERENCE[kind] = CFA(_kinds.kind(kind).reference_pattern())
    return _REFERENCE[kind]


def _reference_layout(kind: str, cls: int) -> np.ndarray:
    """Colour layout around the canonical site of class ``cls`` of the
    reference phase (needs only ``canonical_site``, not orientations)."""
    ref = reference_cfa(kind)
    cy, cx = ref.canonical_site[cls]
    return ref._transformed(cy, cx, D4[0])


_REFERENCE: dict[str, CFA] = {}

#: The four Bayer phases by name.
BAYER_PHASES = ("RGGB", "BGGR", "GRBG", "GBRG")
