"""Training batches from a dataset built by ``kpnt-build-dataset``.

Reads ``manifest.json`` and the pairs' ``.npy`` arrays (memory-mapped, so a
dataset larger than memory works); needs neither rawpy nor OpenCV, so it
runs on a GPU machine that has only the dataset.  See ``datasets/README.md``
for the format.

Per pair the arrays hold the aligned high-ISO mosaic ``noisy`` (its own
exposure), the reference demosaiced by LibRaw ``target`` (the reference's
exposure) and a ``mask``; the manifest holds the exposure match
``noisy ~ gain * reference + offset``, the high-ISO frame's noise profile
(a, b) and its as-shot white balance.  A training tile is built as the model
expects it (DESIGN.md sections 1 and 4, same conventions as
:mod:`kpnt.train.synthesis`)::

    k      = 2 ** U(-2, 2)                        exposure augmentation
    x      = min(k * noisy, 1) * wb[c]            (N, 1, T, T)
    target = k * (gain * target + offset) * wb    (N, 3, T, T)
    noise  = [k * a * wb ; k^2 * b * wb^2]        (N, 2, 3)
    valid  = mask == 0 and k * noisy < 1          (N, 1, T, T)

The loss domain (``--real-loss``): 'mosaic' (the default) compares the
output only where the ISO-100 reference measured something, the reference
mosaic's own colour at each photosite (``target`` then holds
``k * wb[c] * (gain[c] * reference + offset[c])`` in channel c and 0
elsewhere, and ``valid`` is (N, 3, T, T), true only in the measured
channel); 'demosaiced' compares all three channels with LibRaw's demosaic
of the reference, which caps the model's demosaicing at LibRaw's (AHD)
quality.  Validation always scores against the demosaiced reference.
The reference mosaic is aligned at the CFA-consistent ("snapped") shift, so
it has the noisy frame's CFA; the exact shift differs by under one repeat.

Tiles are CFA-safe: each batch has one CFA (a random phase of the sensor
kind); every tile's flips are drawn first and its crop offset is then chosen
so that the flipped, cropped pair's CFA is the batch's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kpnt.dataset.manifest import FORMAT_VERSION, MASK_MOTION, PAIR_ARRAYS, load_manifest, pair_dir
from kpnt.errors import DatasetError, KpntError
from kpnt.mosaic import CFA
from kpnt.mosaic.kinds import MOSAIC_KINDS
from kpnt.train.synthesis import Batch, random_cfa

log = logging.getLogger("kpnt.train")

#: Exposure augmentation range in EV.
EXPOSURE_EV = 2.0
#: A training tile is redrawn (up to MAX_TRIES times) while less than this
#: fraction of it is usable.
MIN_VALID = 0.5
MAX_TRIES = 8
#: Validation holds out about this fraction of the pairs (at least one).
VAL_FRACTION = 0.1
VAL_BATCH = 8


@dataclass
class Pair:
    """One pair of the dataset, arrays memory-mapped.

    noisy: (H, W) float16; target: (3, H, W) float16; mask: (H, W) uint8;
    reference: (H, W) float16 ISO-100 mosaic at the snapped shift (same CFA);
    cfa: layout of ``noisy`` (pattern at (0, 0)); gain, offset, wb: (3,);
    noise: (2, 3) [a; b] of the noisy frame (normalised, not white-balanced).
    """

    id: str
    noisy: np.ndarray
    target: np.ndarray
    mask: np.ndarray
    reference: np.ndarray
    cfa: CFA
    gain: np.ndarray
    offset: np.ndarray
    wb: np.ndarray
    noise: np.ndarray
    usable: float
    iso: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.noisy.shape


def load_pairs(data_dir, sensor: str) -> tuple[dict, list[Pair]]:
    """The manifest and the usable pairs of sensor kind ``sensor``.

    Raises:
        DatasetError: no manifest, no pairs of this sensor kind (the message
            names the kinds present), or none whose arrays are all there.
    """
    data_dir = Path(data_dir)
    doc = load_manifest(data_dir)
    if sensor not in MOSAIC_KINDS:
        raise DatasetError(f"{data_dir}: built datasets hold raw mosaics ({' or '.join(MOSAIC_KINDS)}); --sensor {sensor} "
                           "cannot train on them")
    if not isinstance(doc["pairs"], dict):
        raise DatasetError(f"{data_dir}: damaged manifest.json ('pairs' is not a mapping): rebuild the dataset with "
                           "kpnt-build-dataset --force")
    if not doc["pairs"]:
        raise DatasetError(f"{data_dir}: the dataset holds no pairs (see the rejections in its manifest.json); "
                           "add base-ISO and high-ISO raws of the same scenes and rebuild")
    records, missing = [], []
    for key, r in sorted(doc["pairs"].items()):     # the manifest's keys are the pair ids
        try:
            records.append((key, r, r["cfa"]["kind"]))
        except (KeyError, TypeError) as exc:
            missing.append(f"{key} (damaged manifest record: {type(exc).__name__} {exc})")
    kinds = sorted({kind for _, _, kind in records})
    mine = [(key, r) for key, r, kind in records if kind == sensor]
    if not mine and missing:
        raise DatasetError(f"{data_dir}: no usable {sensor} pair, {len(missing)} damaged record(s) in manifest.json "
                           f"({', '.join(missing[:3])}): rebuild the dataset with kpnt-build-dataset --force")
    if not mine:
        raise DatasetError(f"{data_dir}: the dataset holds {', '.join(kinds)} pairs only, not {sensor}: "
                           f"train with --sensor {kinds[0]} or build a dataset from {sensor} raws")
    pairs = []
    for key, r in mine:
        try:
            pair = _pair(data_dir, key, r)
        except (KeyError, TypeError, ValueError, KpntError) as exc:
            missing.append(f"{key} (damaged manifest record: {type(exc).__name__} {exc})")
            continue
        if isinstance(pair, str):
            missing.append(f"{key} ({pair})")
            continue
        pairs.append(pair)
    if missing:
        log.warning("%s: %d pair(s) skipped, arrays or manifest records missing or damaged: %s (rebuild with kpnt-build-dataset)",
                    data_dir, len(missing), ", ".join(missing[:3]))
    if not pairs:
        raise DatasetError(f"{data_dir}: none of its {len(mine)} {sensor} pair(s) has its arrays: rebuild the dataset")
    return doc, pairs


def _pair(data_dir: Path, key: str, r: dict) -> Pair | str:
    """The :class:`Pair` of manifest record ``r`` (at ``pairs[key]``), or why
    its arrays are not usable (missing, damaged, shapes unlike the record's).
    A record that lacks a key or holds a wrong type raises."""
    if r["id"] != key or not isinstance(r["camera"], str):
        raise ValueError(f"id {r['id']!r} or camera {r['camera']!r} does not fit its key")
    d = pair_dir(data_dir, r["id"])
    h, w = r["size"]
    try:
        arrays = {k: np.load(d / name, mmap_mode="r", allow_pickle=False) for k, (name, _, _) in PAIR_ARRAYS.items()}
    except (OSError, ValueError) as exc:
        return type(exc).__name__
    if (arrays["noisy"].shape != (h, w) or arrays["target"].shape != (3, h, w) or arrays["mask"].shape != (h, w)
            or arrays["reference"].shape != (h, w)):
        return "array shapes disagree with the manifest"
    return Pair(
        id=r["id"], noisy=arrays["noisy"], target=arrays["target"], mask=arrays["mask"], reference=arrays["reference"],
        cfa=CFA.from_json(r["cfa"]), gain=np.asarray(r["gain"], np.float32),
        offset=np.asarray(r["offset"], np.float32), wb=np.asarray(r["wb"], np.float32),
        noise=np.asarray([r["noise"]["a"], r["noise"]["b"]], np.float32),
        usable=float(r["usable_fraction"]), iso=int(r["noisy"]["iso"]),
    )


def _offsets(cfa: CFA, want: CFA) -> list[tuple[int, int]]:
    """Crop residues (oy, ox) in [0, P)^2 with cfa.crop(oy, ox) == want."""
    p = cfa.period
    return [(oy, ox) for oy in range(p) for ox in range(p) if cfa.crop(oy, ox) == want]


def _read_tile(pair: Pair, y0: int, x0: int, size: int, flip_y: bool, flip_x: bool):
    """Tile at (y0, x0) of the pair flipped as asked: (noisy (T, T),
    target (3, T, T), mask (T, T), reference (T, T)) float32/uint8 copies."""
    h, w = pair.shape
    ys = slice(h - y0 - size, h - y0) if flip_y else slice(y0, y0 + size)
    xs = slice(w - x0 - size, w - x0) if flip_x else slice(x0, x0 + size)
    n = np.asarray(pair.noisy[ys, xs], np.float32)
    t = np.asarray(pair.target[:, ys, xs], np.float32)
    m = np.asarray(pair.mask[ys, xs])
    r = np.asarray(pair.reference[ys, xs], np.float32)
    axes = [a for a, f in ((0, flip_y), (1, flip_x)) if f]
    if axes:
        n = np.flip(n, axes)
        m = np.flip(m, axes)
        r = np.flip(r, axes)
        t = np.flip(t, [a + 1 for a in axes])
    return np.ascontiguousarray(n), np.ascontiguousarray(t), np.ascontiguousarray(m), np.ascontiguousarray(r)


#: Loss domains of real pairs (module doc); 'mosaic' is the default.
REAL_LOSSES = ("mosaic", "demosaiced")


def _assemble(tiles: list, cfa: CFA, scales: list[float], domain: str = "demosaiced") -> Batch:
    """Batch from [(pair, noisy, target, mask, reference)] and exposure
    scales k, with the target of the loss ``domain`` (module doc)."""
    if domain not in REAL_LOSSES:
        raise DatasetError(f"unknown real-pair loss domain {domain!r}: choose one of {', '.join(REAL_LOSSES)}")
    size = tiles[0][1].shape[0]
    colour = torch.from_numpy(cfa.colour_map(size, size)).long()
    measured = torch.nn.functional.one_hot(colour, 3).permute(2, 0, 1).bool()     # (3, T, T)
    xs, ts, vs, ns, wbs = [], [], [], [], []
    for (pair, n, t, m, r), k in zip(tiles, scales):
        wb = torch.from_numpy(pair.wb)
        gain, offset = torch.from_numpy(pair.gain), torch.from_numpy(pair.offset)
        n = torch.from_numpy(n) * k
        valid = torch.from_numpy(m == 0) & (n < 1.0)
        xs.append(n.clamp_max(1.0) * wb[colour])
        if domain == "mosaic":
            ref = (torch.from_numpy(r) * gain[colour] + offset[colour]) * k * wb[colour]
            ts.append(measured * ref)
            vs.append(measured & valid)
        else:
            t = torch.from_numpy(t) * gain[:, None, None] + offset[:, None, None]
            ts.append(t * k * wb[:, None, None])
            vs.append(valid[None])
        a, b = torch.from_numpy(pair.noise)
        ns.append(torch.stack([a * k * wb, b * k * k * wb * wb]))
        wbs.append(wb)
    return Batch(x=torch.stack(xs)[:, None], target=torch.stack(ts), noise=torch.stack(ns),
                 valid=torch.stack(vs), cfa=cfa, wb=torch.stack(wbs))


class RealSource:
    """``source(gen) -> Batch`` of random CFA-safe, augmented training tiles."""

    def __init__(self, pairs: list[Pair], sensor: str, tile: int, batch: int, rows: dict[str, int] | None = None,
                 domain: str = "mosaic"):
        """``rows``: per pair id, use only rows below this one (a pair split
        between training and validation); ``domain``: the loss domain."""
        self.pairs, self.sensor, self.tile, self.batch = pairs, sensor, tile, batch
        self.domain = domain
        self.rows = rows or {}
        for p in pairs:
            h, w = p.shape
            if min(self.rows.get(p.id, h), w) < tile + p.cfa.period:
                raise DatasetError(f"pair {p.id} ({h}x{w}) is smaller than a training tile of {tile}: pass a smaller --tile")
        weights = np.array([p.usable * p.shape[0] * p.shape[1] for p in pairs], np.float64)
        self.weights = torch.tensor(weights / weights.sum())

    def _draw(self, gen: torch.Generator, cfa: CFA):
        t = self.tile
        best = None
        for _ in range(MAX_TRIES):
            pair = self.pairs[int(torch.multinomial(self.weights, 1, generator=gen))]
            h, w = pair.shape
            rows = self.rows.get(pair.id, h)
            flip_y, flip_x = (bool(v) for v in torch.randint(2, (2,), generator=gen))
            if flip_y and rows < h:
                flip_y = False                     # flipping would reach into held-out rows
            fcfa = pair.cfa
            if flip_y:
                fcfa = fcfa.flip(0, h)
            if flip_x:
                fcfa = fcfa.flip(1, w)
            offs = _offsets(fcfa, cfa)
            if not offs:
                continue                           # this pair's layout cannot give the batch's phase
            oy, ox = offs[int(torch.randint(len(offs), (1,), generator=gen))]
            p = pair.cfa.period
            ny, nx = (rows - t - oy) // p + 1, (w - t - ox) // p + 1
            y0 = oy + p * int(torch.randint(ny, (1,), generator=gen))
            x0 = ox + p * int(torch.randint(nx, (1,), generator=gen))
            n, tg, m, r = _read_tile(pair, y0, x0, t, flip_y, flip_x)
            frac = float((m == 0).mean())
            if best is None or frac > best[0]:
                best = (frac, (pair, n, tg, m, r))
            if frac >= MIN_VALID:
                break
        if best is None:
            raise DatasetError(f"no pair of the dataset can be cropped to the CFA phase {cfa.name}")
        return best[1]

    def __call__(self, gen: torch.Generator) -> Batch:
        cfa = random_cfa(self.sensor, gen)
        tiles = [self._draw(gen, cfa) for _ in range(self.batch)]
        ev = (torch.rand(self.batch, generator=gen) * 2 - 1) * EXPOSURE_EV
        return _assemble(tiles, cfa, (2.0 ** ev).tolist(), self.domain)


def _val_tiles(pair: Pair, cfa: CFA, size: int, row0: int) -> list[tuple[float, tuple]]:
    """Fixed, non-overlapping tiles of a pair in phase ``cfa`` (rows from
    ``row0`` on), each with its usable fraction."""
    offs = _offsets(pair.cfa, cfa)
    if not offs:
        return []
    oy, ox = offs[0]
    p = pair.cfa.period
    h, w = pair.shape
    y_start = oy + -(-max(row0 - oy, 0) // p) * p
    out = []
    for y0 in range(y_start, h - size + 1, size):
        for x0 in range(ox, w - size + 1, size):
            n, t, m, r = _read_tile(pair, y0, x0, size, False, False)
            out.append((float((m == 0).mean()), (pair, n, t, m, r)))
    return out


def dataset_sources(data_dir, sensor: str, tile: int, batch: int, val_images: int, domain: str = "mosaic"):
    """Training source, validation batches and provenance for ``kpnt-train --data``.

    Args:
        data_dir: dataset folder (``manifest.json`` + ``pairs/``).
        sensor: a mosaic kind (:data:`kpnt.mosaic.kinds.MOSAIC_KINDS`; pairs of other kinds are ignored).
        tile: training tile side in photosites (a multiple of the period).
        batch: tiles per batch.
        val_images: number of validation tiles.
        domain: loss domain of the training batches (:data:`REAL_LOSSES`).
    Returns:
        (source(gen) -> Batch, [Batch, ...] fixed validation batches, dict).
    Raises:
        DatasetError: see :func:`load_pairs`; tiles larger than the pairs.
    """
    from kpnt.train.loop import canonical_cfa

    doc, pairs = load_pairs(data_dir, sensor)
    canon = canonical_cfa(sensor)
    # Hold out whole pairs (about a tenth); with one pair, its bottom quarter.
    rows: dict[str, int] = {}
    if len(pairs) >= 2:
        n_val = max(1, int(round(VAL_FRACTION * len(pairs))))
        val_pairs, train_pairs = pairs[-n_val:], pairs[:-n_val]
        val_from = {p.id: 0 for p in val_pairs}
    else:
        only = pairs[0]
        p = only.cfa.period
        split = (only.shape[0] * 3 // 4) // p * p
        rows[only.id] = split
        val_pairs, train_pairs = [only], [only]
        val_from = {only.id: split}
        log.info("one pair only: rows from %d of it are held out for validation", split)
    source = RealSource(train_pairs, sensor, tile, batch, rows, domain)

    # Validation: fixed tiles in the canonical phase.  validate() scores
    # whole tiles (no mask), so tiles must be clean: the largest size up to
    # twice the training tile at which enough tiles are >= 99% usable.
    want = max(1, val_images)
    sizes = sorted({max(canon.period * 4, (tile * f) // 4 // canon.period * canon.period) for f in (8, 6, 4, 3, 2)},
                   reverse=True)
    chosen, vsize = [], sizes[-1]
    for size in sizes:
        cands = []
        for vp in val_pairs:
            if min(vp.shape[0] - val_from[vp.id], vp.shape[1]) >= size:
                cands += _val_tiles(vp, canon, size, val_from[vp.id])
        cands.sort(key=lambda c: -c[0])
        clean = [c for c in cands if c[0] >= 0.99]
        if len(clean) >= min(want, 4) or size == sizes[-1]:
            chosen, vsize = [c[1] for c in (clean or cands)[:want]], size
            if not clean and cands:
                log.warning("no validation tile is 99 percent usable (motion, saturation): the validation PSNR "
                            "includes masked pixels")
            break
    if not chosen:
        raise DatasetError(f"{data_dir}: the validation pairs are too small for a {vsize}-photosite tile: pass a smaller --tile")
    val_batches = [_assemble(chosen[i:i + VAL_BATCH], canon, [1.0] * len(chosen[i:i + VAL_BATCH]))
                   for i in range(0, len(chosen), VAL_BATCH)]
    cams = sorted({doc["pairs"][p.id]["camera"] for p in pairs})
    prov = {
        "data": f"kpnt-build-dataset {Path(data_dir)}",
        "dataset_format_version": doc.get("format_version", FORMAT_VERSION),
        "cameras": cams,
        "isos": sorted({p.iso for p in pairs}),
        "pairs_train": [p.id for p in train_pairs],
        "pairs_val": [p.id for p in val_pairs],
        "val": f"{len(chosen)} fixed {vsize}x{vsize} tiles of held-out pairs" if len(pairs) >= 2
        else f"{len(chosen)} fixed {vsize}x{vsize} tiles of the held-out bottom rows",
        "noise": "per pair, fitted by kpnt-build-dataset (raw scale)",
        "augmentation": f"exposure +-{EXPOSURE_EV:g} EV, flips, CFA phases",
        "real_loss": domain,
        "motion_mask_bit": MASK_MOTION,
    }
    log.info("%d training pair(s), %d validation tile(s) of %d pair(s), tile %d, batch %d",
             len(train_pairs), len(chosen), len(val_pairs), tile, batch)
    return source, val_batches, prov
