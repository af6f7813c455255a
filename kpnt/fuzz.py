"""Corrupted raws and what kpnt makes of them (the fuzzer's library half).

:func:`make_sources` writes small valid CFA DNGs (Bayer and X-Trans) with
kpnt's own DNG writer; :func:`mutate` corrupts one the way damaged files
and hostile inputs do (truncations, bit and byte flips in the IFDs and the
image data, zeroed tag counts, changed tag types, huge dimensions and
offsets, huge tag counts, broken CFA tags, BlackLevel >= WhiteLevel, negative/NaN/huge
NoiseProfile, zero AsShotNeutral, unrepresentable EXIF values); and
:func:`run_case` reads the result through :func:`kpnt.io.read_raw` and, when
it is accepted, denoises it on the CPU, writes the LinearRaw DNG and reads
that back with rawpy, returning the outcome class:

- ``refused-typed``: ``read_raw`` raised :class:`~kpnt.errors.RawReadError`
  (a one-line message).
- ``accepted-finite``: denoised to finite output that rawpy reads back.
- ``failed-typed``: accepted, then a typed :class:`~kpnt.errors.KpntError`
  (noise level, writer): allowed, but means a check came late.
- ``nonfinite-output``: NaN/inf in the output (a bug).
- ``untyped``: any other exception (a bug).

``tools/fuzz_raw.py`` runs cases in supervised processes (adding ``hang``
and ``crash``); ``tests/test_fuzz_raw.py`` runs a few hundred in-process.
Everything is seeded: case ``i`` of seed ``s`` is the same file every run.

Example::

    >>> srcs = make_sources(tmp)                                   # doctest: +SKIP
    >>> data, kind = mutate(srcs[0].read_bytes(), np.random.default_rng(7))  # doctest: +SKIP
    >>> run_case(data, tmp / "case.dng", models)                   # doctest: +SKIP
    ('refused-typed', 'case.dng: damaged metadata: NoiseProfile (51041) holds inf ...')
"""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from kpnt.mosaic import kinds

OUTCOMES = ("refused-typed", "accepted-finite", "failed-typed", "nonfinite-output", "untyped", "hang", "crash")
#: Outcome classes that are bugs (the acceptance asks for none).
BAD_OUTCOMES = ("nonfinite-output", "untyped", "hang", "crash")

MUTATIONS = ("truncate", "bitflip-ifd", "bitflip-data", "byteflip-ifd", "byteflip-data", "zero-count", "huge-count", "tag-type",
             "huge-dims", "huge-offset", "cfa-broken", "black-ge-white", "noise-profile", "wb-zero", "exif-value",
             "matrix-bad")

# TIFF field type -> (struct code, bytes per value); rationals are 2 codes.
_FMT = {1: ("B", 1), 2: ("B", 1), 3: ("H", 2), 4: ("I", 4), 5: ("II", 8), 6: ("b", 1), 7: ("B", 1), 8: ("h", 2),
        9: ("i", 4), 10: ("ii", 8), 11: ("f", 4), 12: ("d", 8), 13: ("I", 4)}


def make_sources(folder, size: tuple[int, int] = (96, 120)) -> list[Path]:
    """Valid CFA DNGs to corrupt: Bayer (RGGB, GRBG) and X-Trans, with and
    without a NoiseProfile tag; a smooth scene plus noise, some photosites
    saturated.

    Args:
        folder: existing folder to write into.
        size: (H, W) of each mosaic (multiples of 6 keep X-Trans whole).
    Returns:
        The paths written (``src_<cfa>_<noise|nonoise>.dng``).
    """
    from kpnt.io import RawMeta, write_cfa_dng
    from kpnt.mosaic import CFA

    folder = Path(folder)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(1234)
    base = 0.15 + 0.6 * (xx / w) * (0.5 + 0.5 * np.sin(yy / 5.0))
    out = []
    for name, cfa in (("rggb", CFA.bayer("RGGB")), ("grbg", CFA.bayer("GRBG")), (kinds.XTRANS.name, CFA.xtrans())):
        for noise in (True, False):
            meta = RawMeta(black=[512] * 3, white=16383, wb=[2.0, 1.0, 1.6],
                           xyz_to_cam=[[0.8, -0.2, -0.05], [-0.4, 1.2, 0.15], [-0.05, 0.1, 0.6]],
                           make="Acme", model="Fuzz One", iso=3200, exposure_time=1 / 250, f_number=4.0,
                           focal_length=35.0, datetime="2026:01:02 03:04:05",
                           noise_profile=[[2e-4, 4e-6]] * 3 if noise else None)
            x = base + rng.normal(0, 0.02, size)
            counts = np.clip(512 + x * (16383 - 512), 0, 16383)
            counts[3:5, 7:9] = 16383  # a saturated spot
            path = folder / f"src_{name}_{'noise' if noise else 'nonoise'}.dng"
            write_cfa_dng(path, np.round(counts).astype(np.uint16), cfa, meta, overwrite=True)
            out.append(path)
    return out


def _entries(data: bytes) -> list[tuple[int, int, int, int]]:
    """(entry offset, tag, type, count) of every entry in IFD0 and the EXIF
    IFD of a little-endian file as kpnt writes them (the sources)."""
    out = []
    todo, seen = [struct.unpack_from("<I", data, 4)[0]], set()
    while todo:
        off = todo.pop()
        if off in seen or off + 2 > len(data):
            continue
        seen.add(off)
        (n,) = struct.unpack_from("<H", data, off)
        for i in range(n):
            e = off + 2 + 12 * i
            if e + 12 > len(data):
                break
            code, typ, count = struct.unpack_from("<HHI", data, e)
            out.append((e, code, typ, count))
            if code == 34665:
                todo.append(struct.unpack_from("<I", data, e + 8)[0])
    return out


def _value_offset(data: bytes, entry: int, typ: int, count: int) -> int:
    size = _FMT.get(typ, ("B", 1))[1] * count
    return entry + 8 if size <= 4 else struct.unpack_from("<I", data, entry + 8)[0]


def _set_values(buf: bytearray, entry: int, typ: int, values) -> None:
    """Overwrite a tag's values in place (same type; at most its count)."""
    count = struct.unpack_from("<I", buf, entry + 4)[0]
    fmt, size = _FMT[typ]
    off = _value_offset(bytes(buf), entry, typ, count)
    for k, v in enumerate(values[:count]):
        if off + (k + 1) * size <= len(buf):
            struct.pack_into("<" + fmt, buf, off + k * size, *(v if isinstance(v, tuple) else (v,)))


def set_tag(data: bytes, code: int, values=None, typ: int | None = None, count: int | None = None) -> bytes:
    """A copy of ``data`` with one entry of IFD0 or the EXIF IFD changed in
    place: its values (same type; rationals as ``(num, den)`` tuples), then
    its type and/or count field (the value bytes stay where they are).

    Raises:
        KeyError: the tag is not in the file.
    """
    buf = bytearray(data)
    hit = [(e, t) for e, c, t, _ in _entries(data) if c == code]
    if not hit:
        raise KeyError(f"tag {code} not in the file")
    e, t = hit[0]
    if values is not None:
        _set_values(buf, e, t, list(values))
    if typ is not None:
        struct.pack_into("<H", buf, e + 2, typ)
    if count is not None:
        struct.pack_into("<I", buf, e + 4, count)
    return bytes(buf)


def _strip_offset(entries, data: bytes) -> int:
    for e, code, typ, count in entries:
        if code == 273:
            return struct.unpack_from("<I", data, e + 8)[0]
    return len(data)


def mutate(data: bytes, rng: np.random.Generator, kind: str | None = None) -> tuple[bytes, str]:
    """One corruption of a source file.

    Args:
        data: the bytes of a :func:`make_sources` file.
        rng: where the randomness comes from (seed it for reproducible cases).
        kind: one of :data:`MUTATIONS`, or None for a random one.
    Returns:
        ``(corrupted bytes, description)``, e.g. ``'noise-profile 51041=1e39'``.
    """
    kind = kind or MUTATIONS[int(rng.integers(len(MUTATIONS)))]
    buf = bytearray(data)
    entries = _entries(data)
    strip = _strip_offset(entries, data)
    by_tag = {code: (e, typ, count) for e, code, typ, count in entries}

    def pick(codes=None):
        cands = [t for t in entries if codes is None or t[1] in codes]
        return cands[int(rng.integers(len(cands)))] if cands else None

    if kind == "truncate":
        cut = int(rng.integers(0, len(data)))
        return bytes(buf[:cut]), f"truncate at {cut}/{len(data)}"
    if kind in ("bitflip-ifd", "bitflip-data", "byteflip-ifd", "byteflip-data"):
        lo, hi = (0, strip) if kind.endswith("ifd") else (strip, len(data))
        n = int(rng.integers(1, 9))
        where = rng.integers(lo, max(lo + 1, hi), n)
        for pos in where:
            if kind.startswith("bit"):
                buf[pos] ^= 1 << int(rng.integers(8))
            else:
                buf[pos] = int(rng.integers(256))
        return bytes(buf), f"{kind} x{n} at {sorted(int(p) for p in where)[:4]}"
    if kind == "zero-count":
        e, code, _, _ = pick()
        struct.pack_into("<I", buf, e + 4, 0)
        return bytes(buf), f"zero-count tag {code}"
    if kind == "huge-count":
        e, code, _, _ = pick()
        v = int(rng.choice([2**16, 2**20, 2**24, 2**31, 2**32 - 1]))
        struct.pack_into("<I", buf, e + 4, v)
        return bytes(buf), f"huge-count tag {code}={v}"
    if kind == "tag-type":
        e, code, typ, _ = pick()
        new = int(rng.integers(0, 15))
        struct.pack_into("<H", buf, e + 2, new)
        return bytes(buf), f"tag-type tag {code} {typ}->{new}"
    if kind == "huge-dims":
        code = int(rng.choice([256, 257]))
        v = int(rng.choice([0, 1, 65535, 10**6, 2**31, 2**32 - 1]))
        e, typ, _ = by_tag[code]
        _set_values(buf, e, typ, [v])
        return bytes(buf), f"huge-dims {code}={v}"
    if kind == "huge-offset":
        e, code, typ, count = pick([273, 279, 34665, 50721, 50728, 51041, 50714, 33434])
        v = int(rng.choice([len(data), len(data) + 1, 2**31, 2**32 - 1]))
        if code == 279:  # StripByteCounts: a huge byte count instead
            _set_values(buf, e, typ, [v])
        else:
            struct.pack_into("<I", buf, e + 8, v)
        return bytes(buf), f"huge-offset tag {code}={v}"
    if kind == "cfa-broken":
        which = int(rng.integers(4))
        if which == 0:
            e, typ, _ = by_tag[33421]
            dims = [int(v) for v in rng.integers(0, 17, 2)]
            _set_values(buf, e, typ, dims)
            return bytes(buf), f"cfa-broken dims {dims}"
        if which == 1:
            e, typ, count = by_tag[33422]
            pat = [int(v) for v in rng.integers(0, 6, count)]
            _set_values(buf, e, typ, pat)
            return bytes(buf), "cfa-broken pattern values"
        if which == 2:
            e, _, _ = by_tag[33422]
            struct.pack_into("<I", buf, e + 4, int(rng.integers(0, 40)))
            return bytes(buf), "cfa-broken pattern count"
        e, typ, _ = by_tag[50710]
        planes = [int(v) for v in rng.integers(0, 7, 3)]
        _set_values(buf, e, typ, planes)
        return bytes(buf), f"cfa-broken planes {planes}"
    if kind == "black-ge-white":
        e, typ, count = by_tag[50714]
        white = 16383
        v = int(rng.choice([white, white + 1, 65535, 2**31]))
        vals = [v] * count if rng.random() < 0.5 else [v] + [512] * (count - 1)
        _set_values(buf, e, typ, vals)
        return bytes(buf), f"black-ge-white black={v}"
    if kind == "noise-profile":
        if 51041 not in by_tag:
            return mutate(data, rng, "bitflip-ifd")
        e, typ, count = by_tag[51041]
        v = float(rng.choice([-1e-4, -1.0, np.nan, np.inf, -np.inf, 1e39, 1e300, 0.0, 5.0]))
        vals = [v] * count if rng.random() < 0.5 else [2e-4, v] * (count // 2)
        if rng.random() < 0.2:
            struct.pack_into("<I", buf, e + 4, int(rng.choice([1, 3, 5, 7])))
        _set_values(buf, e, typ, vals)
        return bytes(buf), f"noise-profile {v}"
    if kind == "wb-zero":
        e, typ, count = by_tag[50728]
        vals = [(0, 1)] * count if rng.random() < 0.5 else [(0, 1), (1, 1), (int(rng.integers(0, 3)), 0)]
        _set_values(buf, e, typ, vals)
        return bytes(buf), f"wb-zero {vals}"
    if kind == "exif-value":
        code = int(rng.choice([33434, 33437, 37386]))
        if code not in by_tag:
            return mutate(data, rng, "bitflip-ifd")
        e, typ, _ = by_tag[code]
        v = [(4294967295, 1), (1, 0), (0, 0), (4294967295, 4294967295), (3, 4294967295)][int(rng.integers(5))]
        _set_values(buf, e, typ, [v])
        return bytes(buf), f"exif-value {code}={v}"
    if kind == "matrix-bad":
        e, typ, count = by_tag[50721]
        choice = int(rng.integers(3))
        vals = ([(0, 1)] * count if choice == 0 else [(2**31 - 1, 1)] * count if choice == 1
                else [(int(rng.integers(-9, 9)), 0)] * count)
        _set_values(buf, e, typ, vals)
        return bytes(buf), f"matrix-bad {['zero', 'huge', 'den0'][choice]}"
    raise ValueError(f"unknown mutation {kind!r}: expected one of {MUTATIONS}")


def load_models(weights: dict | None = None) -> dict:
    """CPU models per sensor kind: the given ``{sensor: path}`` or the
    shipped weights."""
    from kpnt.weights_io import load_weights, shipped_weights

    out = {}
    for sensor in kinds.MOSAIC_KINDS:
        path = (weights or {}).get(sensor) or shipped_weights(sensor)
        model, _ = load_weights(path, sensor=sensor)
        out[sensor] = model.eval()
    return out


def run_case(data: bytes, path, models: dict) -> tuple[str, str]:
    """Write ``data`` to ``path``, read it, denoise it if accepted.

    Args:
        data: the (corrupted) file's bytes.
        path: where to put it (its folder also receives the output DNG;
            both are removed again).
        models: ``{sensor: KPNT}`` from :func:`load_models`.
    Returns:
        ``(outcome, detail)``: outcome one of :data:`OUTCOMES` (never
        'hang'/'crash': the supervisor adds those), detail the error line
        or a short note.
    """
    import rawpy
    import torch

    from kpnt.denoise import choose_noise, denoise_raw, to_uint16
    from kpnt.errors import KpntError, RawReadError
    from kpnt.io import read_raw, write_linear_dng

    path = Path(path)
    out = path.with_name(path.stem + "_out.dng")
    path.write_bytes(data)
    try:
        try:
            raw = read_raw(path)
        except RawReadError as exc:
            return "refused-typed", str(exc)
        try:
            noise = choose_noise(raw)
            with torch.no_grad():
                rgb = denoise_raw(models[raw.cfa.kind], raw, noise, tile=512, device="cpu")
            if not np.isfinite(rgb).all():
                return "nonfinite-output", f"{int((~np.isfinite(rgb)).sum())} non-finite values ({noise.describe()})"
            write_linear_dng(out, to_uint16(rgb), raw.meta, overwrite=True)
            with rawpy.imread(str(out)) as rp:
                back = rp.raw_image.copy()
            if back.shape[:2] != rgb.shape[:2]:
                return "untyped", f"output read back as {back.shape}, expected {rgb.shape}"
        except KpntError as exc:
            return "failed-typed", " ".join(str(exc).split())
        return "accepted-finite", noise.source
    except Exception as exc:  # the point of fuzzing: anything untyped is a finding
        return "untyped", f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    finally:
        for p in (path, out):
            if p.exists():
                p.unlink()
