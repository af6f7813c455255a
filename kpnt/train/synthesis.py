"""On-the-fly synthetic training pairs (DESIGN.md section 4, "Targets").

A linear-sRGB scene tile is *unprocessed* (Brooks et al. 2019) into a raw
mosaic: converted to white-balanced camera RGB with a real camera's colour
matrix, exposed by +-2 EV, divided by a random as-shot white balance, clipped
at the white level (saturation), sampled by the CFA, and given
Poissonian-Gaussian noise at raw-photosite scale.  The network then sees the
white-balanced noisy mosaic, and the target is the white-balanced clean
camera RGB image, so that

    input  x = wb[c] * (m + n),   var(n) = a_c m + b_c
    target t = wb * min(cam / wb, 1)

and the noise parameters handed to the model are white-balanced with it:
``a' = wb a``, ``b' = wb^2 b``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kpnt.color import srgb_to_cam_matrix
from kpnt.mosaic import CFA
from kpnt.noise import add_noise_torch


@dataclass
class CameraModel:
    """What the synthesis needs of one camera: its colour matrix and the raw
    noise profiles it is trained at (``noise``: (K, 2, 3) [a; b] per ISO, in
    normalised raw units at raw-photosite scale)."""

    name: str
    xyz_to_cam: np.ndarray
    noise: np.ndarray

    def __post_init__(self):
        self.to_wb_cam = torch.tensor(srgb_to_cam_matrix(self.xyz_to_cam), dtype=torch.float32)
        self.noise = np.asarray(self.noise, dtype=np.float32).reshape(-1, 2, 3)


@dataclass
class SynthConfig:
    """Ranges of the random draws (DESIGN.md section 8 and vkdt's cnngenin)."""

    wb_red: tuple[float, float] = (1.9, 2.4)
    wb_blue: tuple[float, float] = (1.5, 1.9)
    exposure_ev: tuple[float, float] = (-2.0, 2.0)
    #: the scene is scaled so its white sits at this fraction of the white level
    headroom: tuple[float, float] = (0.7, 0.95)
    #: noise (a, b) multiplied by exp(U(-s, s)): levels around the profile
    noise_jitter: float = 0.4


@dataclass
class Batch:
    """One training batch.

    x: (N, C, H, W) noisy white-balanced input (C=1 mosaic, 3 for rgb);
    target: (N, 3, H, W) clean white-balanced camera RGB;
    noise: (N, 2, 3) white-balanced [a; b]; valid: (N, 1, H, W) bool,
    False at saturated pixels; cfa: the batch's CFA (None for rgb);
    wb: (N, 3) the as-shot white balance gains that were applied.
    """

    x: torch.Tensor
    target: torch.Tensor
    noise: torch.Tensor
    valid: torch.Tensor
    cfa: CFA | None
    wb: torch.Tensor | None = None


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def synthesize(
    scenes: torch.Tensor,
    cfa: CFA | None,
    cameras: list[CameraModel],
    gen: torch.Generator,
    config: SynthConfig = SynthConfig(),
) -> Batch:
    """Turn linear-sRGB scene tiles ``(N, 3, H, W)`` into a noisy/clean batch.

    ``cfa`` None synthesises the rgb sensor (noise added per channel of a
    full RGB image, the seed's original setting).
    """
    n, _, h, w = scenes.shape
    cam_idx = torch.randint(len(cameras), (n,), generator=gen).tolist()
    wbcam = torch.stack([torch.einsum("ij,jhw->ihw", cameras[k].to_wb_cam, s) for k, s in zip(cam_idx, scenes)])
    wbcam = wbcam.clamp_min(0.0)

    wb = torch.ones(n, 3)
    wb[:, 0] = _uniform(gen, n, *config.wb_red)
    wb[:, 2] = _uniform(gen, n, *config.wb_blue)
    # Scale so that scene white (1 in every white-balanced channel) lands at
    # `headroom` of the white level in the channel with the largest gain
    # (the one that saturates first), then expose by +-2 EV.
    scale = _uniform(gen, n, *config.headroom) / wb.max(dim=1).values
    scale = scale * 2.0 ** _uniform(gen, n, *config.exposure_ev)
    raw_rgb = wbcam * scale[:, None, None, None] / wb[:, :, None, None]
    saturated = (raw_rgb >= 1.0).any(dim=1, keepdim=True)
    raw_rgb = raw_rgb.clamp_max(1.0)
    target = raw_rgb * wb[:, :, None, None]

    noise = torch.stack(
        [torch.from_numpy(cameras[k].noise[int(torch.randint(len(cameras[k].noise), (1,), generator=gen))]) for k in cam_idx]
    )
    jitter = torch.exp(_uniform(gen, n, -config.noise_jitter, config.noise_jitter))
    noise = noise * jitter[:, None, None]

    if cfa is None:
        clean, colour = raw_rgb, None
        gain = wb[:, :, None, None]
    else:
        colour = torch.from_numpy(cfa.colour_map(h, w)).long()
        clean = torch.gather(raw_rgb, 1, colour.expand(n, 1, h, w))
        gain = wb[:, colour][:, None]
    # Profiles with a negative read variance b exist (darktable fits): the
    # sampler clamps a*x + b at zero.  The sensor clips at the white level.
    noisy = add_noise_torch(clean, noise[:, 0], noise[:, 1], colour, gen).clamp_max(1.0)
    x = noisy * gain

    noise_wb = torch.stack([noise[:, 0] * wb, noise[:, 1] * wb**2], dim=1)
    return Batch(x=x, target=target, noise=noise_wb, valid=~saturated, cfa=cfa, wb=wb)


def random_cfa(sensor: str, gen: torch.Generator) -> CFA | None:
    """A CFA of the sensor kind in a random phase (None for rgb), so that the
    model learns every phase a crop or a camera can hand it."""
    if sensor == "rgb":
        return None
    dy, dx = torch.randint(6, (2,), generator=gen).tolist()
    if sensor == "bayer":
        return CFA.bayer("RGGB").crop(dy % 2, dx % 2)
    return CFA.xtrans(dy, dx)
