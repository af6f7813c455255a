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

Before unprocessing, the augmentations a real camera needs (issue 13): a
random colourfulness (chroma scaled about the luminance, so that strongly
saturated colours are common), optical blur (a Gaussian of random width:
anti-aliasing filters and lenses soften real raws, so the demosaicer must
work on soft and on sharp images), white balances that cover daylight to
tungsten, and noise from zero upward (a share of the images get the
profile scaled down by up to 10^4, some none at all: ISO 100 and clean
inputs must be in the trained range).

Everything runs on the scenes' device: the per-image draws come from the
CPU generator ``gen`` (so a checkpoint of ``gen`` reproduces the stream),
and the per-photosite noise on a GPU from a generator on that device seeded
by one draw of ``gen``.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kpnt.color import srgb_to_cam_matrix
from kpnt.mosaic import CFA
from kpnt.noise import add_noise_torch
from kpnt.mosaic import kinds
from kpnt.mosaic.cfa import reference_cfa


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

    #: as-shot gains: daylight (R ~1.9-2.4, B ~1.5-1.9) to tungsten and shade
    wb_red: tuple[float, float] = (1.3, 2.7)
    wb_blue: tuple[float, float] = (1.2, 2.6)
    exposure_ev: tuple[float, float] = (-2.0, 2.0)
    #: the scene is scaled so its white sits at this fraction of the white level
    headroom: tuple[float, float] = (0.7, 0.95)
    #: noise (a, b) multiplied by exp(U(-s, s)): levels around the profile
    noise_jitter: float = 0.4
    #: share of images whose noise is scaled by 10^U(low_noise_decades, 0)
    low_noise_prob: float = 0.15
    low_noise_decades: float = -4.0
    #: share of images with no noise at all (clean mosaics)
    zero_noise_prob: float = 0.05
    #: chroma scale about the luminance (linear sRGB), drawn for this share
    saturation: tuple[float, float] = (0.7, 1.6)
    saturation_prob: float = 0.5
    #: optical blur: Gaussian std (scene pixels) for this share of images
    blur_sigma: tuple[float, float] = (0.3, 0.9)
    blur_prob: float = 0.5


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
    dev = scenes.device
    cam_idx = torch.randint(len(cameras), (n,), generator=gen).tolist()
    scenes = _augment(scenes, gen, config)
    to_cam = torch.stack([cameras[k].to_wb_cam for k in cam_idx]).to(dev)
    wbcam = torch.einsum("nij,njhw->nihw", to_cam, scenes).clamp_min(0.0)

    wb = torch.ones(n, 3)
    wb[:, 0] = _uniform(gen, n, *config.wb_red)
    wb[:, 2] = _uniform(gen, n, *config.wb_blue)
    # Scale so that scene white (1 in every white-balanced channel) lands at
    # `headroom` of the white level in the channel with the largest gain
    # (the one that saturates first), then expose by +-2 EV.
    scale = _uniform(gen, n, *config.headroom) / wb.max(dim=1).values
    scale = scale * 2.0 ** _uniform(gen, n, *config.exposure_ev)
    raw_rgb = wbcam * (scale[:, None] / wb).to(dev)[:, :, None, None]
    saturated = (raw_rgb >= 1.0).any(dim=1, keepdim=True)
    raw_rgb = raw_rgb.clamp_max(1.0)
    target = raw_rgb * wb.to(dev)[:, :, None, None]

    noise = torch.stack(
        [torch.from_numpy(cameras[k].noise[int(torch.randint(len(cameras[k].noise), (1,), generator=gen))]) for k in cam_idx]
    )
    jitter = torch.exp(_uniform(gen, n, -config.noise_jitter, config.noise_jitter))
    low = torch.rand(n, generator=gen) < config.low_noise_prob
    jitter = torch.where(low, jitter * 10.0 ** _uniform(gen, n, config.low_noise_decades, 0.0), jitter)
    jitter = torch.where(torch.rand(n, generator=gen) < config.zero_noise_prob, torch.zeros(n), jitter)
    noise = noise * jitter[:, None, None]

    if cfa is None:
        clean, colour = raw_rgb, None
        gain = wb.to(dev)[:, :, None, None]
    else:
        colour = torch.from_numpy(cfa.colour_map(h, w)).long().to(dev)
        clean = torch.gather(raw_rgb, 1, colour.expand(n, 1, h, w))
        gain = wb.to(dev)[:, colour][:, None]
    # Per-photosite draws: from gen itself on the CPU, else from a generator
    # on the device seeded by gen (reproducible from gen's state alike).
    noise_gen = gen
    if dev.type != "cpu":
        noise_gen = torch.Generator(device=dev).manual_seed(int(torch.randint(2**62, (1,), generator=gen)))
    # Profiles with a negative read variance b exist (darktable fits): the
    # sampler clamps a*x + b at zero.  The sensor clips at the white level.
    nd = noise.to(dev)
    noisy = add_noise_torch(clean, nd[:, 0], nd[:, 1], colour, noise_gen).clamp_max(1.0)
    x = noisy * gain

    noise_wb = torch.stack([noise[:, 0] * wb, noise[:, 1] * wb**2], dim=1).to(dev)
    return Batch(x=x, target=target, noise=noise_wb, valid=~saturated, cfa=cfa, wb=wb.to(dev))


#: Rec. 709 / sRGB luminance weights of linear RGB.
_LUMA = (0.2126, 0.7152, 0.0722)


def _augment(scenes: torch.Tensor, gen: torch.Generator, config: SynthConfig) -> torch.Tensor:
    """Colourfulness and optical blur of linear-sRGB scene tiles (module doc).

    The draws are made for every image whether or not it is changed, so the
    stream of ``gen`` does not depend on the outcomes."""
    n = scenes.shape[0]
    dev = scenes.device
    sat = _uniform(gen, n, *config.saturation)
    sat = torch.where(torch.rand(n, generator=gen) < config.saturation_prob, sat, torch.ones(n))
    sigma = _uniform(gen, n, *config.blur_sigma)
    sigma = torch.where(torch.rand(n, generator=gen) < config.blur_prob, sigma, torch.zeros(n))
    if (sat != 1).any():
        luma = torch.tensor(_LUMA, device=dev, dtype=scenes.dtype)
        y = torch.einsum("c,nchw->nhw", luma, scenes)[:, None]
        scenes = (y + sat.to(dev)[:, None, None, None] * (scenes - y)).clamp_min(0.0)
    if (sigma > 0).any():
        scenes = gaussian_blur(scenes, sigma.to(dev))
    return scenes


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int = 3) -> torch.Tensor:
    """Blur each image of ``(N, C, H, W)`` with a separable Gaussian of its
    own std ``sigma[n]`` (pixels; 0 leaves it unchanged), mirrored edges."""
    n, c, h, w = images.shape
    t = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    s = sigma.to(images.dtype).clamp_min(1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = torch.where(sigma[:, None] > 0, k, (t[None] == 0).to(images.dtype))
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(c, 0)             # (N C, 2r+1)
    z = torch.nn.functional.pad(images.reshape(1, n * c, h, w), (radius,) * 4, mode="reflect")
    z = torch.nn.functional.conv2d(z, k[:, None, None, :], groups=n * c)
    z = torch.nn.functional.conv2d(z, k[:, None, :, None], groups=n * c)
    return z.reshape(n, c, h, w)


def random_cfa(sensor: str, gen: torch.Generator) -> CFA | None:
    """A CFA of the sensor kind in a random phase (None for rgb), so that the
    model learns every phase a crop or a camera can hand it."""
    if sensor == kinds.RGB:
        return None
    # One draw for every kind (kinds.PHASE_DRAW, a multiple of each period):
    # the random stream does not depend on the kind.
    dy, dx = torch.randint(kinds.PHASE_DRAW, (2,), generator=gen).tolist()
    period = kinds.kind(sensor).period
    return reference_cfa(sensor).crop(dy % period, dx % period)
