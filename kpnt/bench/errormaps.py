"""Error-map pictures: where kpnt's error lives, beside demosaicnet's.

One PNG per sensor, one row per crop of a validation photo: the reference
(sRGB), then for kpnt and for demosaicnet the output, the error (output
minus reference in sRGB, amplified ``GAIN`` x about mid-grey: grey = no
error, a colour cast = that channel too high) and its low-pass (Gaussian,
sigma ``LOWPASS_SIGMA`` px, amplified ``LOWPASS_GAIN`` x), which shows the
coarse colour blotches that fine-scale error hides.

Crops: the photos with the largest share of strongly saturated pixels
(where the hue errors are) unless ``--error-map-photos`` names them, each
cropped around its most saturated window.

A second picture per sensor, ``errorgap_<sensor>.png``, shows where kpnt
trails demosaicnet most: over every photo of the cell, the ``GAP_CROPS``
windows where kpnt's summed squared sRGB error exceeds demosaicnet's by the
most (one per photo), same layout.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kpnt.color import render_srgb
from kpnt.io.atomic import atomic_write

CROP = 160
GAIN = 4.0
LOWPASS_SIGMA = 6.0
LOWPASS_GAIN = 16.0
#: HSV saturation above which a pixel counts as strongly saturated
STRONG = 0.6
#: Rows of the gap picture (windows where kpnt trails demosaicnet most).
GAP_CROPS = 3


def _saturation(rgb: np.ndarray) -> np.ndarray:
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    return np.where(mx > 0.05, (mx - mn) / np.maximum(mx, 1e-6), 0.0)


def pick_photos(photos, n: int = 3) -> list[int]:
    """Indices of the ``n`` photos with the largest share of strongly
    saturated pixels (linear sRGB photos, (3, H, W) tensors)."""
    share = [float((_saturation(np.asarray(p).transpose(1, 2, 0)) > STRONG).mean()) for p in photos]
    return sorted(np.argsort(share)[::-1][:n].tolist())


def best_window(score: np.ndarray, size: int = CROP) -> tuple[tuple[int, int], float]:
    """Top-left corner of the ``size`` window (inside the image) with the
    largest mean of the per-pixel ``score`` (H, W), and that mean."""
    h, w = score.shape
    size = min(size, h, w)
    s = cv2.boxFilter(score.astype(np.float32), -1, (size, size), normalize=True, borderType=cv2.BORDER_CONSTANT)
    half = size // 2
    inner = s[half : h - (size - half) + 1, half : w - (size - half) + 1]
    y, x = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return (int(y), int(x)), float(inner[y, x])


def crop_window(rgb: np.ndarray, size: int = CROP) -> tuple[int, int]:
    """Top-left corner of the ``size`` window with the most saturation
    (sides kept inside the image)."""
    return best_window(_saturation(rgb), size)[0]


def gap_window(kpnt_srgb: np.ndarray, dn_srgb: np.ndarray, ref_srgb: np.ndarray, size: int = CROP) -> tuple[tuple[int, int], float]:
    """The window where kpnt's squared sRGB error (summed over channels)
    exceeds demosaicnet's the most, and that excess (mean per pixel)."""
    def sq(a):
        return ((a.astype(np.float32) - ref_srgb.astype(np.float32)) ** 2).sum(axis=2)
    return best_window(sq(kpnt_srgb) - sq(dn_srgb), size)


def error_panels(out_srgb: np.ndarray, ref_srgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(amplified error, amplified low-pass error) of two sRGB crops, both
    as displayable sRGB in [0, 1] (0.5 = no error)."""
    err = out_srgb.astype(np.float32) - ref_srgb.astype(np.float32)
    low = cv2.GaussianBlur(err, (0, 0), LOWPASS_SIGMA, borderType=cv2.BORDER_REFLECT)
    return np.clip(0.5 + GAIN * err, 0, 1), np.clip(0.5 + LOWPASS_GAIN * low, 0, 1)


class ErrorMaps:
    """Collects crops during a benchmark run and writes the pictures.

    Args:
        folder: where ``errormap_<sensor>.png`` go.
        cell: the cell the crops come from (``"clean"`` or an ISO).
        photos: the benchmark's :class:`kpnt.train.photos.PhotoSource`.
        indices: each photo's index in the sorted folder (the benchmark's
            photo numbers).
        which: photo numbers to crop, or None for :func:`pick_photos`.
    """

    def __init__(self, folder, cell, photos, indices, which=None):
        self.folder = Path(folder)
        self.cell = cell
        self.which = list(which) if which else [indices[i] for i in pick_photos(photos.photos)]
        self.crops: dict[tuple, dict] = {}
        #: (sensor, k) -> full sRGB renders waiting for the other method
        self._pending: dict[tuple, dict] = {}
        #: sensor -> [(excess, k, slot)], the GAP_CROPS largest kept
        self.gaps: dict[str, list] = {}

    def wants(self, cell, k: int) -> bool:
        """Whether photo ``k`` of ``cell`` is needed: every photo of the
        cell is (the gap picture searches them all)."""
        return cell == self.cell

    def add(self, sensor: str, cell, k: int, method: str, out_cam: np.ndarray, case: dict) -> None:
        """Keep the crop of one method's camera-RGB output of photo ``k``."""
        if not self.wants(cell, k):
            return
        wb, m = case["wb"], case["xyz_to_cam"]
        out = render_srgb(out_cam, wb, m)
        if k in self.which:
            slot = self.crops.setdefault((sensor, k), {})
            if "ref" not in slot:
                ref = render_srgb(case["ref_cam"], wb, m)
                slot["yx"] = crop_window(ref)
                y, x = slot["yx"]
                slot["ref"] = ref[y : y + CROP, x : x + CROP]
            y, x = slot["yx"]
            slot[method] = out[y : y + CROP, x : x + CROP]
        if method in ("kpnt", "demosaicnet"):
            self._add_gap_candidate(sensor, k, method, out, case)

    def _add_gap_candidate(self, sensor, k, method, out, case) -> None:
        pending = self._pending.setdefault((sensor, k), {})
        pending[method] = out
        if len(pending) < 2:
            return
        del self._pending[(sensor, k)]
        ref = render_srgb(case["ref_cam"], case["wb"], case["xyz_to_cam"])
        (y, x), excess = gap_window(pending["kpnt"], pending["demosaicnet"], ref)
        window = (slice(y, y + CROP), slice(x, x + CROP))
        slot = {"ref": ref[window], "kpnt": pending["kpnt"][window], "demosaicnet": pending["demosaicnet"][window]}
        kept = self.gaps.setdefault(sensor, [])
        kept.append((excess, k, slot))
        kept.sort(key=lambda e: -e[0])
        del kept[GAP_CROPS:]

    def write(self) -> list[str]:
        """Write the PNGs of every sensor (atomically); returns the paths.
        The demosaicnet columns are left out (said on the console) where it
        did not run; the gap picture needs it."""
        self.folder.mkdir(parents=True, exist_ok=True)
        cell = self.cell if self.cell == "clean" else f"ISO {self.cell}"
        written = []
        for sensor in dict.fromkeys(s for s, _ in self.crops):
            slots = [(k, slot) for (s, k), slot in sorted(self.crops.items()) if s == sensor and "kpnt" in slot]
            if not slots:
                print(f"note: no error map for {sensor}: kpnt did not run on the error-map cell")
                continue
            methods = ["kpnt"] + (["demosaicnet"] if all("demosaicnet" in slot for _, slot in slots) else [])
            if len(methods) == 1:
                print(f"note: error map for {sensor} without demosaicnet (it did not run)")
            path = self.folder / f"errormap_{sensor}.png"
            _write_picture(path, [slot for _, slot in slots], methods)
            written.append(str(path))
            print(f"error map ({sensor}, {cell}, photos {', '.join(str(k) for k, _ in slots)}): {path}")
        for sensor, kept in self.gaps.items():
            path = self.folder / f"errorgap_{sensor}.png"
            _write_picture(path, [slot for _, _, slot in kept], ["kpnt", "demosaicnet"])
            written.append(str(path))
            where = ", ".join(f"photo {k} (+{excess:.1e})" for excess, k, _ in kept)
            print(f"error gap map ({sensor}, {cell}; where kpnt's squared sRGB error exceeds demosaicnet's most: {where}): {path}")
        return written


def _write_picture(path: Path, slots: list[dict], methods: list[str]) -> None:
    """One row per crop: the reference, then per method its output, its
    amplified error and the error's low-pass; a header names the columns."""
    rows = []
    for slot in slots:
        ref = slot["ref"]
        tiles = [ref]
        for method in methods:
            e, lo = error_panels(slot[method], ref)
            tiles += [slot[method], e, lo]
        rows.append(np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=1.0) for t in tiles], axis=1))
    width = max(r.shape[1] for r in rows)
    img = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=1.0) for r in rows], axis=0)
    u8 = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)[:, :, ::-1]
    head = np.full((22, u8.shape[1], 3), 255, np.uint8)
    tile_w = min(CROP, slots[0]["ref"].shape[1]) + 4
    names = ["reference"]
    for method in methods:
        short = "dn" if method == "demosaicnet" else method
        names += [method, f"{short} err x{GAIN:g}", f"low-pass x{LOWPASS_GAIN:g}"]
    for i, name in enumerate(names):
        cv2.putText(head, name, (i * tile_w + 4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    u8 = np.ascontiguousarray(np.concatenate([head, u8], axis=0))
    ok, png = cv2.imencode(".png", u8)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the PNG")
    atomic_write(path, [png.tobytes()], overwrite=True)
