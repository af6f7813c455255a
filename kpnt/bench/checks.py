"""Issue 13's acceptance checks, computed from one run's rows (printed
PASS/FAIL, never asserted: the benchmark measures, the reader judges).

1. kpnt >= demosaicnet+BM3D in every ISO >= 800 cell, both PSNRs (linear
   and sRGB); kpnt >= demosaicnet alone at ISO 100, both PSNRs.
2. Clean mosaics: kpnt within 1.0 dB of demosaicnet (sRGB); the clean
   mosaic given its near-zero noise level scores no worse than the same
   mosaic given the ISO-100 level (``kpnt@iso100-noise``), both PSNRs.
3. Colour fidelity: in the most saturated bin, kpnt's per-channel |bias| is
   at most 2x LibRaw's (every cell where both ran).

A check whose methods did not both run is ``None`` ("n/a").
"""
from __future__ import annotations

import numpy as np

from kpnt.bench.cases import CLEAN

#: suffix of the kpnt variant given the ISO-100 noise level on clean mosaics
ISO100_VARIANT = "@iso100-noise"
#: tolerance of the "no worse" comparisons (float rounding of means)
EPS = 1e-9
#: (2)'s allowed sRGB gap to demosaicnet on clean mosaics, dB
CLEAN_GAP_DB = 1.0
#: (3)'s allowed ratio of kpnt's to LibRaw's |bias| in the top saturation bin
BIAS_RATIO = 2.0


def verdict(passed) -> str:
    """'PASS', 'FAIL' or 'n/a' (None)."""
    return "n/a" if passed is None else ("PASS" if passed else "FAIL")


def kpnt_methods(methods) -> list[str]:
    """The kpnt methods among ``methods`` (``kpnt`` or ``kpnt:<weights>``),
    without their ISO-100-noise variants."""
    return [m for m in methods if m.split(":")[0] == "kpnt" and not m.endswith(ISO100_VARIANT)]


def _cells(rows, sensor):
    return list(dict.fromkeys(r["cell"] for r in rows if r["sensor"] == sensor))


def _get(rows, sensor, cell, method):
    return next((r for r in rows if r["sensor"] == sensor and r["cell"] == cell and r["method"] == method), None)


def _compare(rows, sensor, cell, kp, peer, spaces, margin=0.0) -> dict:
    """kpnt minus ``peer`` in each space; passed when every delta >= -margin."""
    a, b = _get(rows, sensor, cell, kp), _get(rows, sensor, cell, peer)
    if a is None or b is None:
        return dict(deltas=None, passed=None)
    d = {s: a[f"psnr_{s}"] - b[f"psnr_{s}"] for s in spaces}
    return dict(deltas=d, passed=all(v >= -margin - EPS for v in d.values()))


def bias_check(kpnt_colour: dict | None, libraw_colour: dict | None) -> dict:
    """(3) on pooled colour statistics (:func:`kpnt.bench.metrics.pool_colour_stats`):
    the last (most saturated) non-empty bin's per-channel |bias| of kpnt
    against ``BIAS_RATIO`` x LibRaw's.  Returns ``bin``, ``kpnt_bias``,
    ``libraw_bias`` and ``passed`` (None where either is missing)."""
    if kpnt_colour is None or libraw_colour is None:
        return dict(kpnt_bias=None, libraw_bias=None, passed=None)
    n = np.asarray(kpnt_colour["n"])
    full = np.nonzero(n > 0)[0]
    if not len(full):
        return dict(kpnt_bias=None, libraw_bias=None, passed=None)
    i = int(full[-1])
    k, lr = np.abs(np.asarray(kpnt_colour["bias"][i])), np.abs(np.asarray(libraw_colour["bias"][i]))
    return dict(bin=i, kpnt_bias=k.tolist(), libraw_bias=lr.tolist(), passed=bool((k <= BIAS_RATIO * lr + EPS).all()))


def acceptance(rows: list[dict], colour: dict) -> list[dict]:
    """All checks of one run.

    Args:
        rows: per (sensor, cell, method) rows with ``psnr_lin``/``psnr_srgb``.
        colour: ``(sensor, cell, method) -> pooled colour statistics``.
    Returns:
        One dict per check: ``point`` (1-3), ``sensor``, ``cell``, ``kpnt``
        (the kpnt method), ``what`` (words), ``deltas`` (space -> dB) or
        ``kpnt``/``libraw`` biases, ``passed`` (True/False/None).
    """
    out = []
    for sensor in dict.fromkeys(r["sensor"] for r in rows):
        methods = list(dict.fromkeys(r["method"] for r in rows if r["sensor"] == sensor))
        for kp in kpnt_methods(methods):
            for cell in _cells(rows, sensor):
                both = ("lin", "srgb")
                if cell != CLEAN and cell >= 800:
                    out.append(dict(point=1, sensor=sensor, cell=cell, kpnt=kp, what=f"{kp} >= demosaicnet+bm3d",
                                    **_compare(rows, sensor, cell, kp, "demosaicnet+bm3d", both)))
                elif cell == 100:
                    out.append(dict(point=1, sensor=sensor, cell=cell, kpnt=kp, what=f"{kp} >= demosaicnet",
                                    **_compare(rows, sensor, cell, kp, "demosaicnet", both)))
                elif cell == CLEAN:
                    out.append(dict(point=2, sensor=sensor, cell=cell, kpnt=kp,
                                    what=f"{kp} >= demosaicnet - {CLEAN_GAP_DB:g} dB (sRGB)",
                                    **_compare(rows, sensor, cell, kp, "demosaicnet", ("srgb",), CLEAN_GAP_DB)))
                    out.append(dict(point=2, sensor=sensor, cell=cell, kpnt=kp,
                                    what=f"{kp} (near-zero noise) >= {kp}{ISO100_VARIANT}",
                                    **_compare(rows, sensor, cell, kp, kp + ISO100_VARIANT, both)))
                c = bias_check(colour.get((sensor, cell, kp)), colour.get((sensor, cell, "libraw")))
                out.append(dict(point=3, sensor=sensor, cell=cell, kpnt=kp,
                                what=f"top-saturation |bias| {kp} <= {BIAS_RATIO:g} x libraw", **c))
    return out


def format_check(c: dict) -> str:
    """One printed line of a check."""
    cell = c["cell"] if c["cell"] == CLEAN else f"ISO {c['cell']}"
    head = f"check ({c['point']}) {c['sensor']} {cell}: {c['what']}"
    if c["passed"] is None:
        return f"{head}: n/a (a method did not run)"
    if c["point"] == 3:
        k = " / ".join(f"{1e3 * v:.1f}" for v in c["kpnt_bias"])
        lr = " / ".join(f"{1e3 * v:.1f}" for v in c["libraw_bias"])
        return f"{head}: |bias| R / G / B (1e-3 of white) kpnt {k}, libraw {lr} {verdict(c['passed'])}"
    d = " / ".join(f"{v:+.2f} {'sRGB' if s == 'srgb' else 'lin'}" for s, v in c["deltas"].items())
    return f"{head}: {d} {verdict(c['passed'])}"


def summary(checks: list[dict]) -> list[str]:
    """One line per (kpnt method, point): PASS if every check passed, FAIL
    if one failed, n/a if none could run."""
    lines = []
    for kp in dict.fromkeys(c["kpnt"] for c in checks):
        for point in (1, 2, 3):
            cs = [c for c in checks if c["kpnt"] == kp and c["point"] == point]
            ran = [c for c in cs if c["passed"] is not None]
            v = None if not ran else all(c["passed"] for c in ran)
            extra = f" ({len(cs) - len(ran)} of {len(cs)} n/a)" if len(ran) < len(cs) else ""
            lines.append(f"issue 13 acceptance ({point}) for {kp}: {verdict(v)}{extra}")
    return lines
