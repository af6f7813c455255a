#!/usr/bin/env python3
"""Dead channels of the guide, per hidden layer, for weights files.

A channel is dead when its ReLU is off at every position of every probe
tile: it adds nothing and gets no gradient (``kpnt.train.revive``;
``kpnt-train --revive-dead-guide`` re-initialises such channels).  The probe
is a seeded draw of random tiles of ``--photos`` with the held-out cameras'
noise at ISO 1600, a quarter of them clean and a third at low noise (the
shipped training mix), random CFA phases.

Usage::

    python tools/guide_activity.py kpnt/weights/bayer.safetensors kpnt/weights/xtrans.safetensors

Prints one line per file: per hidden layer, dead channels / channels active
at under 1% of positions, and the totals.

``--why`` adds a line per file on how the dead channels were switched off:
how many have a largest bias-free pre-activation ``max conv(z, W)`` at or
below 0 (their weights alone keep them off on the non-negative stream of
layers 1 and up, whatever the bias) and the median bias of the dead and the
live channels (``kpnt.ref.guide.record_preactivation``).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def probe_batches(sensor: str, photos, profiles: Path, device, batches: int, tile: int, seed: int):
    """``batches`` synthetic batches of 8 tiles (module doc), on ``device``."""
    from kpnt.noise import load_profile_table
    from kpnt.train.loop import batch_to
    from kpnt.train.synthesis import SynthConfig, random_cfa, synthesize
    from val_levels import camera_models

    cams = camera_models(sensor, load_profile_table(profiles), 1600)
    config = dataclasses.replace(SynthConfig(), zero_noise_prob=0.25, low_noise_prob=0.35)
    gen = torch.Generator().manual_seed(seed)
    return [batch_to(synthesize(photos.sample(8, tile, gen), random_cfa(sensor, gen), cams, gen, config), device)
            for _ in range(batches)]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("weights", nargs="+", type=Path, help="weights files with a guide (Bayer and X-Trans may be mixed)")
    p.add_argument("--photos", type=Path, default=SHARED / "photos" / "val", help="folder of photos to cut probe tiles from")
    p.add_argument("--profiles", type=Path, default=SHARED / "noiseprofiles.json")
    p.add_argument("--batches", type=int, default=4, help="probe batches of 8 tiles (default 4)")
    p.add_argument("--tile", type=int, default=126, help="probe tile side (default 126)")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--why", action="store_true",
                   help="also say whether the dead channels are kept off by their weights or by their biases")
    args = p.parse_args(argv)

    from kpnt.train.photos import PhotoSource
    from kpnt.ref.guide import record_activity, record_preactivation
    from kpnt.train.revive import guide_activity, probe_guide
    from kpnt.weights_io import load_weights

    photos = PhotoSource.from_folder(args.photos, downscale=1)
    probes = {}
    print(f"{args.batches} x 8 tiles of {args.tile}^2 from {args.photos}: per hidden guide layer, dead / active under 1%")
    for w in args.weights:
        model, meta = load_weights(w, device=args.device)
        sensor = meta["sensor"]
        if sensor not in probes:
            probes[sensor] = probe_batches(sensor, photos, args.profiles, args.device, args.batches, args.tile, args.seed)
        if args.why:
            act, pre = probe_guide(model, probes[sensor], record_activity, record_preactivation)
        else:
            act = guide_activity(model, probes[sensor])
        if not act:
            print(f"{w} ({sensor}): no guide")
            continue
        dead = [int((a == 0).sum()) for a in act]
        rare = [int((a < 0.01).sum()) for a in act]
        width = act[0].numel()
        print(f"{w} ({sensor}): " + " ".join(f"{d}/{r}" for d, r in zip(dead, rare))
              + f"; dead {sum(dead)} of {width * len(act)}, under 1% {sum(rare)}", flush=True)
        if args.why:
            print("  " + why_dead(model, act, pre), flush=True)
    return 0


def why_dead(model, act, pre) -> str:
    """One line: of the dead channels in hidden layers 1 and up, how many
    their weights alone keep off, and the median biases (module doc).
    ``act`` and ``pre``: per hidden layer, the probe's largest active share
    and bias-free pre-activation per channel (``probe_guide``)."""
    from kpnt.ref.guide import hidden_layers

    dead = torch.cat([a == 0 for a in act[1:]]).cpu()
    if not dead.any():
        return "layers 1 and up: no dead channel"
    pre_max = torch.cat(pre[1:]).cpu()
    by_weights = (pre_max <= 0) & dead
    layers = hidden_layers(list(model.sets["guide"]), model.config.guide_proj)
    bias = torch.cat([layer[1].detach().float() for layer in layers[1:]]).cpu()

    def med(t):
        return f"{float(t.median()):+.3f}" if t.numel() else "-"
    return (f"layers 1 and up: {int(by_weights.sum())} of {int(dead.sum())} dead channels are off by their weights alone "
            f"(bias-free pre-activation <= 0; its median max {med(pre_max[dead])}, live {med(pre_max[~dead])}); "
            f"median bias dead {med(bias[dead])}, live {med(bias[~dead])}")


if __name__ == "__main__":
    sys.exit(main())
