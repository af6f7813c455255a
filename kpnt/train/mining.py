"""Hard-example mining (issue 13): train more on the tiles the model gets wrong.

Random crops of photographs are mostly smooth; the places where demosaicing
fails (fine repetitive texture near the Nyquist limit, saturated colour
edges, thin lines) are a small share of the pixels, so a model trained on
random crops sees them rarely.  Gharbi et al. (demosaicnet, 2016) trained on
crops selected for their error under a baseline and got most of their lead
over classical demosaicers there.  Here the model being fine-tuned is the
baseline: :func:`mine_hard_boxes` scores many random candidate tiles by its
error on their clean mosaic (no noise: demosaicing alone), in sRGB (where
the eye and issue 13's acceptance look), and keeps the worst share; the
photo source then draws ``--hard-share`` of its tiles near them.
"""
from __future__ import annotations

import logging

import torch

from kpnt.color import linear_to_srgb
from kpnt.train.photos import PhotoSource
from kpnt.train.synthesis import CameraModel, SynthConfig, random_cfa, synthesize

log = logging.getLogger(__name__)

#: Photosites at each tile edge left out of a tile's score (padded context).
SCORE_BORDER = 8


def tile_errors(model, scenes: torch.Tensor, sensor: str, cameras: list[CameraModel], gen: torch.Generator) -> torch.Tensor:
    """Per-tile mean squared sRGB error (white-balanced camera RGB through the
    sRGB curve) of ``model`` on the clean mosaics of ``scenes`` (N, 3, H, W):
    one random CFA phase for the batch, saturated pixels left out."""
    batch = synthesize(scenes, random_cfa(sensor, gen), cameras, gen, SynthConfig(zero_noise_prob=1.0))
    out = model(batch.x, batch.cfa, batch.noise)
    b = SCORE_BORDER
    err = (linear_to_srgb(out.clamp(0, 1)) - linear_to_srgb(batch.target.clamp(0, 1)))[..., b:-b, b:-b] ** 2
    valid = batch.valid[..., b:-b, b:-b].to(err.dtype)
    return (err * valid).sum(dim=(1, 2, 3)) / (3 * valid.sum(dim=(1, 2, 3))).clamp_min(1.0)


@torch.no_grad()
def mine_hard_boxes(
    model,
    photos: PhotoSource,
    sensor: str,
    cameras: list[CameraModel],
    size: int,
    candidates: int,
    keep: float,
    gen: torch.Generator,
    batch: int = 32,
) -> list[tuple[int, int, int]]:
    """The ``keep`` share of ``candidates`` random tile corners ``(photo, y,
    x)`` whose clean mosaics ``model`` demosaics worst (:func:`tile_errors`),
    worst first."""
    if not 0 < keep <= 1:
        raise ValueError(f"keep must be in (0, 1], got {keep}")
    was_training = model.training
    model.eval()
    try:
        boxes = [photos.random_box(size, gen) for _ in range(candidates)]
        scores = torch.cat([tile_errors(model, photos.crops(boxes[i : i + batch], size), sensor, cameras, gen).cpu()
                            for i in range(0, candidates, batch)])
    finally:
        model.train(was_training)
    n_keep = max(1, round(keep * candidates))
    order = torch.argsort(scores, descending=True)[:n_keep].tolist()
    kept = scores[order]
    log.info("hard-example mining: kept %d of %d tiles, sRGB error %.2e..%.2e (all tiles: mean %.2e)",
             n_keep, candidates, float(kept[-1]), float(kept[0]), float(scores.mean()))
    return [boxes[i] for i in order]
