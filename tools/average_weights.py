#!/usr/bin/env python3
"""Average the weights of several kpnt weights files of one sensor and architecture.

Fine-tuning stages that start from one another stay in one basin of the loss, so the mean of their weights
(uniform, like stochastic weight averaging over checkpoints) can score above each of them. This writes that mean
as an ordinary weights file: the provenance is the last file's (its ``steps`` too), with ``averaged_from`` listing
every input and its tensor checksum.

    python tools/average_weights.py runs/s49/bayer-t8.safetensors runs/s49/bayer-t9.safetensors -o avg.safetensors
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from kpnt.errors import WeightsError
from kpnt.mosaic.cfa import CFA
from kpnt.weights_io import CHECKSUM_KEY, load_weights, save_weights


def average_models(paths: list[Path]):
    """The model whose every weight is the mean of the files' weights, and the last file's metadata.

    Raises:
        WeightsError: fewer than two files, or files of different sensors or architectures.
    """
    if len(paths) < 2:
        raise WeightsError("give at least two weights files to average")
    models, metas = zip(*(load_weights(p) for p in paths))
    first = models[0]
    for p, m in zip(paths[1:], models[1:]):
        if m.sensor != first.sensor or m.config != first.config:
            raise WeightsError(f"{p} ({m.sensor}) and {paths[0]} ({first.sensor}) differ in sensor or "
                               "architecture: average files of one sensor and config only")
    sets = [m.weight_sets() for m in models]
    with torch.no_grad():
        for name, mats in sets[0].items():
            for i, mat in enumerate(mats):
                mat.copy_(torch.stack([s[name][i].detach().to(torch.float64) for s in sets]).mean(0).to(mat.dtype))
    return first, metas


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("weights", nargs="+", type=Path, help="weights files (one sensor, one architecture)")
    ap.add_argument("-o", "--out", type=Path, required=True, help="the averaged file to write (not one of the inputs)")
    args = ap.parse_args(argv)
    if any(args.out.resolve() == p.resolve() for p in args.weights if p.exists()):
        print(f"error: {args.out} is one of the inputs: write the average to a new file", file=sys.stderr)
        return 2
    try:
        model, metas = average_models(args.weights)
    except WeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    prov = dict(metas[-1]["provenance"])
    prov["averaged_from"] = [{"file": str(p), CHECKSUM_KEY: m[CHECKSUM_KEY]}
                             for p, m in zip(args.weights, metas)]
    cfa = CFA.from_json(prov["train_cfa"]) if "train_cfa" in prov else None
    save_weights(args.out, model, cfa, prov)
    print(f"wrote {args.out}: mean of {len(args.weights)} {model.sensor} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
