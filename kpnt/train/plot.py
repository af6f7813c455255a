"""The training curve as a PNG (OpenCV drawing: no plotting dependency)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from kpnt.io.atomic import atomic_write


def _polyline(img, xs, ys, x_range, y_range, box, colour):
    x0, y0, x1, y1 = box
    if len(xs) < 1:
        return
    px = x0 + (np.asarray(xs, float) - x_range[0]) / max(x_range[1] - x_range[0], 1e-9) * (x1 - x0)
    py = y1 - (np.asarray(ys, float) - y_range[0]) / max(y_range[1] - y_range[0], 1e-9) * (y1 - y0)
    pts = np.stack([px, py], axis=1).round().astype(np.int32)
    if len(pts) == 1:
        cv2.circle(img, tuple(pts[0]), 3, colour, -1)
    else:
        cv2.polylines(img, [pts], False, colour, 2, cv2.LINE_AA)


def write_curve(path: str | Path, steps, losses, val_steps, val_psnr, title: str = "") -> None:
    """Two panels: training loss (log scale) and validation PSNR over steps."""
    w, h = 900, 640
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    cv2.putText(img, title, (20, 28), font, 0.7, (0, 0, 0), 1, cv2.LINE_AA)
    panels = [(70, 50, w - 30, 320), (70, 370, w - 30, h - 50)]
    for box in panels:
        cv2.rectangle(img, box[:2], box[2:], (160, 160, 160), 1)
    x_range = (0, max([1] + list(steps) + list(val_steps)))
    if len(losses):
        ll = np.log10(np.clip(np.asarray(losses, float), 1e-12, None))
        yr = (ll.min(), ll.max() if ll.max() > ll.min() else ll.min() + 1)
        _polyline(img, steps, ll, x_range, yr, panels[0], (240, 200, 170))
        # per-step losses of random tiles scatter a lot: overlay a running mean
        k = max(1, len(ll) // 40)
        smooth = np.convolve(ll, np.ones(k) / k, mode="valid")
        _polyline(img, np.asarray(steps)[k - 1 :], smooth, x_range, yr, panels[0], (200, 80, 0))
        cv2.putText(img, f"log10 loss  [{yr[0]:.2f}, {yr[1]:.2f}]", (80, 70), font, 0.5, (200, 80, 0), 1, cv2.LINE_AA)
    if len(val_psnr):
        vp = np.asarray(val_psnr, float)
        yr = (vp.min() - 0.5, vp.max() + 0.5)
        _polyline(img, val_steps, vp, x_range, yr, panels[1], (0, 120, 0))
        cv2.putText(img, f"validation PSNR dB  [{yr[0]:.1f}, {yr[1]:.1f}], last {vp[-1]:.2f}", (80, 390), font, 0.5, (0, 120, 0), 1, cv2.LINE_AA)
    cv2.putText(img, f"step 0 .. {x_range[1]}", (w // 2 - 60, h - 15), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", img)
    if not ok:
        raise OSError(f"{path}: OpenCV could not encode the curve as PNG")
    atomic_write(Path(path), [png.tobytes()], overwrite=True)
