"""Timing helpers and the large-raw speed test of the quality benchmark.

kpnt (``denoise_raw`` on the decoded raw: on CUDA with the fused kernels,
built before any timing and their build time reported apart; the PyTorch
reference with a printed reason if they cannot be built) and demosaicnet
(whole call, host array in and out) are timed on one synthetic raw of
``--speed-mp`` megapixels per device (on the CPU at most ``--cpu-speed-mp``);
BM3D on demosaicnet's output of one ``--bm3d-speed-mp`` raw, in a worker.
CUDA timings are synchronised and follow an untimed warm-up.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from kpnt.bench.cases import case_seed, make_case, memory_raw, mosaic_wb
from kpnt.bench.peers import bm3d_denoise
from kpnt.denoise import NoiseChoice, default_tile, denoise_raw


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device="cpu"):
    """``(fn(), seconds)``; on a CUDA device synchronised before and after,
    so queued work is neither charged to nor hidden from ``fn``."""
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def bm3d_crop_seconds(rgb_wb: np.ndarray, noise_wb: np.ndarray) -> float:
    """Wall seconds of :func:`bm3d_denoise` on one image (speed test)."""
    return timed(lambda: bm3d_denoise(rgb_wb, noise_wb))[1]


def time_devices(spec: str | None) -> list[str]:
    """``--time-device``: ``cpu``, ``cuda``, ``both``, or None (the CPU, plus
    CUDA when torch sees a GPU).  The first device of the list is the one
    whose outputs are scored (CUDA when it is in the list)."""
    have_cuda = torch.cuda.is_available()
    if spec is None:
        return ["cuda", "cpu"] if have_cuda else ["cpu"]
    if spec in ("cuda", "both") and not have_cuda:
        raise SystemExit(f"--time-device {spec}: torch sees no CUDA GPU (torch {torch.__version__}, CUDA {torch.version.cuda})")
    return {"cpu": ["cpu"], "cuda": ["cuda"], "both": ["cuda", "cpu"]}[spec]


def load_kpnt(weights: Path, sensor: str, device: str) -> tuple[object, str, dict]:
    """kpnt's model on ``device`` with its best backend: on CUDA the fused
    kernels (built here, the build timed apart: ``info['build_s']``), or the
    PyTorch reference with a printed reason when they cannot be built.
    Returns ``(model, backend, info)``."""
    from kpnt.weights_io import load_weights

    try:
        import safetensors  # noqa: F401
    except ImportError:
        raise SystemExit("kpnt's weights need the safetensors package (pip install safetensors)")
    model = load_weights(weights, sensor=sensor, device=device)[0].eval()
    info = {}
    backend = "torch"
    if torch.device(device).type == "cuda":
        from kpnt import _backend

        try:
            _, info["build_s"] = timed(_backend.load, device)
            # 'auto': the fused kernels for what they implement, the
            # reference (logged) for the rest of the weights' config.
            from kpnt.ops.capability import config_problems as fused_problems

            problems = fused_problems(model.config)
            backend = "cuda" if not problems else "auto"
            if problems:
                info["reference_parts"] = "; ".join(problems)
                print(f"note: on {device} these parts run on the PyTorch reference: {info['reference_parts']}")
        except _backend.BackendError as err:
            info["fallback"] = str(err)
            print(f"note: fused CUDA kernels unavailable ({err}); kpnt on {device} runs the PyTorch reference")
    model.backend = backend
    return model, backend, info


def speed_image(photo: torch.Tensor, mp: float) -> torch.Tensor:
    """(3, H, W) scene of about ``mp`` megapixels, 3:2, sides multiples of 6,
    upsampled (bilinear) from a photo: what the timed methods do does not
    depend on the content, except BM3D's a little."""
    h = max(6, int(round((mp * 1e6 / 1.5) ** 0.5 / 6)) * 6)
    w = max(6, int(round(h * 1.5 / 6)) * 6)
    return torch.nn.functional.interpolate(photo[None], size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)


def speed_test(sensor, cam, cfa, prof, photo, mp, models, dnets, reps_cuda=3, cpu_mp=4.0, to_raw=memory_raw) -> tuple[list[dict], dict]:
    """Time kpnt and demosaicnet on one synthetic raw of ``mp`` megapixels on
    each device (host array in, host array out: kpnt's ``denoise_raw`` with
    the device's default tile on the decoded raw, demosaicnet's whole call;
    :func:`_time_reps`); on the CPU a raw of at most ``cpu_mp`` megapixels
    (s/MP no longer depends on the size there, and demosaicnet's X-Trans
    model takes ~13 s/MP on two cores).  ``to_raw(case)`` makes kpnt's
    input (a DNG round trip or :func:`kpnt.bench.cases.memory_raw`; not
    timed).  Returns the rows
    and the demosaicnet output + white-balanced profile of the first device
    (for the BM3D crop)."""

    cases = {}

    def case_of(dev):
        """The synthetic raw timed on ``dev`` (the CPU's at most ``cpu_mp``)."""
        size = mp if torch.device(dev).type == "cuda" else min(mp, cpu_mp)
        if size not in cases:
            case = make_case(speed_image(photo, size), cfa, cam, prof, seed=case_seed(sensor, 0, 0))
            case["raw"] = to_raw(case)
            case["mosaic_wb"] = mosaic_wb(case)
            cases[size] = case
        return cases[size]

    rows, dn_out = [], None
    for dev, (model, backend) in models.items():
        c = case_of(dev)
        noise = NoiseChoice(c["noise"], "given")

        def run_kpnt(r=c["raw"], m=model, d=dev, n=noise):
            return denoise_raw(m, r, n, tile=default_tile(d), device=d)

        rows.append(dict(sensor=sensor, method="kpnt", device=dev, backend=backend, **_time_reps(run_kpnt, dev, reps_cuda, c["mp"])))
    for dev, dnet in dnets.items():
        c = case_of(dev)
        holder = {}

        def run_dnet(dn=dnet, x=c["mosaic_wb"]):
            holder["out"] = dn(x, cfa)
            return holder["out"]

        rows.append(dict(sensor=sensor, method="demosaicnet", device=dev, backend="torch", **_time_reps(run_dnet, dev, reps_cuda, c["mp"])))
        if dn_out is None:
            dn_out, noise_wb = holder["out"], c["noise_wb"]
    if dn_out is None:
        noise_wb = None
    return rows, dict(dn_out=dn_out, noise_wb=noise_wb)


def _time_reps(fn, dev, reps_cuda, mp) -> dict:
    """One untimed warm-up call of the full size (allocations, cuDNN
    choices, the reference ops' per-shape index caches), then the median of
    ``reps_cuda`` synchronised calls on CUDA, one call on the CPU."""
    timed(fn, dev)
    reps = reps_cuda if torch.device(dev).type == "cuda" else 1
    secs = sorted(timed(fn, dev)[1] for _ in range(reps))
    sec = secs[len(secs) // 2]
    return dict(mp=mp, sec=sec, sec_per_mpix=sec / mp, how=f"median of {reps} after a warm-up call" if reps > 1 else "1 call after a warm-up call")


