"""Poissonian-Gaussian noise profiles: ``var(x) = a[c] * x + b[c]``.

``x`` is the normalised raw value ``(raw - black) / (white - black)`` of a
photosite of colour ``c`` (R=0, G=1, B=2), DESIGN.md section 1.  ``a`` is
the shot-noise gain (one photo-electron is ``a`` in normalised units) and
``b`` the signal-independent (read) variance.

Example::

    >>> p = NoiseProfile(a=[2e-3, 1e-3, 1.5e-3], b=[4e-6, 3e-6, 4e-6])
    >>> float(p.variance(0.5, 1))           # green at half scale
    0.000503
    >>> q = p.white_balanced([2.0, 1.0, 1.7])   # profile of wb * x
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kpnt.errors import NoiseProfileError

#: darktable's profiles (``noiseprofiles.json``) are fitted on demosaiced
#: exports with a Haar-detail MAD estimator that sees only a fraction of the
#: per-photosite raw variance: raw noise of known variance reads back about
#: 12x smaller (12.1x Bayer/PPG, 13.5x AHD, 14.1x X-Trans; DESIGN.md
#: section 1).  Multiply darktable's ``a`` *and* ``b`` by this factor to get
#: photosite variances.
DARKTABLE_RAW_SCALE = 12.0


def _as_triplet(name: str, value) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.shape != (3,):
        raise NoiseProfileError(f"noise profile '{name}' must hold 3 values (R, G, B), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise NoiseProfileError(f"noise profile '{name}' must be finite, got {arr.tolist()}")
    arr = arr.copy()
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class NoiseProfile:
    """Per-channel noise model ``var(x) = a[c] * max(x, 0) + b[c]``.

    Attributes:
        a: (3,) float64 shot-noise gain per colour (R, G, B), >= 0.
        b: (3,) float64 signal-independent variance per colour.  Fitted
            tables hold small negative values at times (a fit artefact);
            they are kept as given, and samplers draw the Gaussian part with
            variance ``max(b, 0)``.
    """

    a: np.ndarray
    b: np.ndarray

    def __post_init__(self):
        a = _as_triplet("a", self.a)
        b = _as_triplet("b", self.b)
        if (a < 0).any():
            raise NoiseProfileError(f"noise profile 'a' must be >= 0 (shot-noise gain), got {a.tolist()}")
        object.__setattr__(self, "a", a)
        object.__setattr__(self, "b", b)

    def __eq__(self, other):
        return isinstance(other, NoiseProfile) and np.array_equal(self.a, other.a) and np.array_equal(self.b, other.b)

    def __repr__(self):
        fmt = lambda v: "[" + ", ".join(f"{x:.4g}" for x in v) + "]"  # noqa: E731
        return f"NoiseProfile(a={fmt(self.a)}, b={fmt(self.b)})"

    def variance(self, x, colour) -> np.ndarray:
        """Noise variance at intensity ``x`` of colour ``colour``.

        Args:
            x: array (any shape) of normalised intensities; negative values
                count as 0 for the shot-noise term (no photons).
            colour: int array of colour indices (0 R, 1 G, 2 B) broadcastable
                against ``x``, e.g. a (H, W) CFA colour map for a (H, W)
                mosaic or ``[0, 1, 2]`` for a (H, W, 3) image.
        Returns:
            float64 array of the broadcast shape.
        """
        colour = np.asarray(colour)
        if colour.dtype.kind not in "iu" or (colour.size and (colour.min() < 0 or colour.max() > 2)):
            raise NoiseProfileError("colour must be integer indices 0 (R), 1 (G), 2 (B)")
        x = np.asarray(x, dtype=np.float64)
        return self.a[colour] * np.maximum(x, 0.0) + self.b[colour]

    def white_balanced(self, gains) -> "NoiseProfile":
        """Profile of the white-balanced signal ``g[c] * x``.

        ``var(g x) = g^2 (a x + b) = (g a) (g x) + g^2 b``, so
        ``a' = g a`` and ``b' = g^2 b``.

        Args:
            gains: (3,) positive per-channel gains (green usually 1).
        """
        g = np.asarray(gains, dtype=np.float64)
        if g.shape != (3,) or not np.isfinite(g).all() or (g <= 0).any():
            raise NoiseProfileError(f"white-balance gains must be 3 positive finite numbers, got {np.asarray(gains).tolist()}")
        return NoiseProfile(a=self.a * g, b=self.b * g * g)

    def exposure_scaled(self, k: float) -> "NoiseProfile":
        """Profile of ``k * x`` (an exposure push/pull by ``log2(k)`` EV of
        the same raw): ``a' = k a``, ``b' = k^2 b``."""
        k = float(k)
        if not np.isfinite(k) or k <= 0:
            raise NoiseProfileError(f"exposure scale must be a positive finite number, got {k}")
        return NoiseProfile(a=self.a * k, b=self.b * k * k)

    def scaled(self, factor: float) -> "NoiseProfile":
        """Both ``a`` and ``b`` multiplied by ``factor`` (e.g.
        :data:`DARKTABLE_RAW_SCALE` to bring a darktable profile to raw
        scale, or a random noise-level augmentation)."""
        f = float(factor)
        if not np.isfinite(f) or f <= 0:
            raise NoiseProfileError(f"noise scale factor must be a positive finite number, got {f}")
        return NoiseProfile(a=self.a * f, b=self.b * f)

    def as_array(self) -> np.ndarray:
        """(2, 3) float32 ``[a, b]``, e.g. for a batch tensor of profiles."""
        return np.stack([self.a, self.b]).astype(np.float32)

    def to_json(self) -> dict:
        """``{"a": [aR, aG, aB], "b": [bR, bG, bB]}`` (normalised units)."""
        return {"a": [float(v) for v in self.a], "b": [float(v) for v in self.b]}

    @classmethod
    def from_json(cls, d) -> "NoiseProfile":
        """Inverse of :meth:`to_json`."""
        if not isinstance(d, dict) or "a" not in d or "b" not in d:
            raise NoiseProfileError("a noise profile in JSON must be an object with keys 'a' and 'b' (3 numbers each)")
        return cls(a=d["a"], b=d["b"])
