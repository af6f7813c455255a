#!/usr/bin/env python3
"""How many 32-byte sectors a warp's tap loads touch in the front level's MLP
(issue 14, point 2: X-Trans's front backward takes 1.0 ms of the graphed
step against Bayer's 0.77 for the same MLP and rows).  A CPU model, no GPU.

    python tools/front_sectors.py
    python tools/front_sectors.py --search-tap-order 3000

The front MLP's kernels (``kernels/mlp_core.cuh`` ``load_rows``, the wgmma
forward and backward alike) give a warp 16 consecutive rows of a site
class's row order (``kpnt.ops._cuda.front_level._partition``): lane L holds
rows L / 4 and L / 4 + 8 and input columns 2 (L % 4) + {0, 1} of each block
of 8; its tap inputs are the photosite at the row's position plus the tap's
offset for the row's repeat position (``_tables``' ``tap_off``: the class's
canonical taps turned by the site's D4 transform).  One load instruction
reads one column for each of the 32 lanes: 8 rows x 4 taps.  The model
counts the distinct 32-byte sectors of those 32 float32 addresses, for each
of the load instructions of the three all-tap blocks of 8 columns, over a
sample of interior warps of every class, and prints the mean for the row
orders the module offers (raster, and ``ROWS_BY_SITE``).  More sectors a
load are more L1 wavefronts a load; whether they bound the kernel is for a
profiler to say (the model counts no cache misses).

With ``--search-tap-order N``: a simulated annealing of N steps over the
order of the first 24 taps in the MLP's input columns (tap 24 is read with
the noise input), minimising the two sensors' sum in raster order: what a
permutation of the tap table and of the first layer's columns (the same
math) would save.
"""
from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SECTOR_BYTES = 32
ROWS_A_WARP = 16
TAP_BLOCKS = (0, 8, 16)   # the blocks of 8 input columns that are all taps (T = 25)


def warp_positions(pattern: tuple, by_site: bool, H: int, W: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(y, x) of the 32 lanes' rows, (n_loads, 32) each: every ``stride``-th
    warp of every class whose rows are all interior (2 pixels from the edges)."""
    from kpnt.ops._cuda.front_level import _partition

    perm, offsets = _partition(pattern, 1, H, W, "cpu", by_site)
    perm, offsets = perm.long().numpy(), offsets.long().numpy()
    lane = np.arange(32)
    ys, xs = [], []
    for k in range(len(offsets) - 1):
        rows = perm[offsets[k]:offsets[k + 1]]
        for base in range(0, len(rows) - ROWS_A_WARP + 1, ROWS_A_WARP * stride):
            for half in (0, 8):
                r = rows[base + lane // 4 + half]
                y, x = r // W, r % W
                if y.min() >= 2 and y.max() < H - 2 and x.min() >= 2 and x.max() < W - 2:
                    ys.append(y)
                    xs.append(x)
    return np.array(ys), np.array(xs)


def sectors_a_load(tap_off: np.ndarray, P: int, ys: np.ndarray, xs: np.ndarray, W: int,
                   order: np.ndarray | None = None) -> float:
    """Mean distinct 32-byte sectors of a tap load instruction.  ``tap_off``
    (P*P, T, 2) the offsets (dy, dx) of each repeat position's taps; ``order``
    the canonical tap each input column reads (default: column t reads tap t)."""
    if order is not None:
        tap_off = tap_off[:, order]
    col = 2 * (np.arange(32) % 4)
    site = (ys % P) * P + (xs % P)
    total = loads = 0
    for j0 in TAP_BLOCKS:
        for e in (0, 1):
            d = tap_off[site, j0 + col + e]                                # (n_loads, 32, 2)
            sector = ((ys + d[..., 0]) * W + xs + d[..., 1]) * 4 // SECTOR_BYTES
            s = np.sort(sector, axis=1)
            total += int((1 + (np.diff(s, axis=1) != 0).sum(axis=1)).sum())
            loads += len(s)
    return total / loads


def sensor_case(sensor: str, H: int, W: int, stride: int):
    """(pattern, P, tap_off, {order name: (ys, xs)}) of the shipped radius-2 front level."""
    from kpnt.mosaic.cfa import CFA
    from kpnt.ops._cuda.front_level import _tables

    cfa = CFA.bayer() if sensor == "bayer" else CFA.xtrans()
    pattern = tuple(int(v) for v in cfa.pattern.reshape(-1))
    tap_off = _tables(pattern, 2, "cpu")[1].numpy()
    orders = {name: warp_positions(pattern, by_site, H, W, stride)
              for name, by_site in (("raster", False), ("by site", True))}
    return pattern, cfa.period, tap_off, orders


def search_tap_order(cases: list, W: int, steps: int, seed: int = 0) -> tuple[np.ndarray, float]:
    """The tap order (25 entries, tap 24 last) with the smallest sum of the
    cases' raster sectors a load that ``steps`` annealing swaps found."""
    rng = random.Random(seed)

    def cost(order):
        return sum(sectors_a_load(tap_off, P, *orders["raster"], W, order) for _, P, tap_off, orders in cases)

    current = np.arange(25)
    current_cost = cost(current)
    best, best_cost = current.copy(), current_cost
    for step in range(steps):
        i, j = rng.sample(range(24), 2)
        trial = current.copy()
        trial[i], trial[j] = trial[j], trial[i]
        trial_cost = cost(trial)
        temperature = 1.0 - step / steps + 1e-3
        if trial_cost < current_cost or rng.random() < np.exp((current_cost - trial_cost) / temperature):
            current, current_cost = trial, trial_cost
            if current_cost < best_cost:
                best, best_cost = current.copy(), current_cost
    return best, best_cost


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, nargs=2, default=(516, 516), metavar=("H", "W"),
                    help="mosaic size (default 516 x 516: a multiple of both periods)")
    ap.add_argument("--stride", type=int, default=7, help="model every STRIDE-th warp (default 7)")
    ap.add_argument("--search-tap-order", type=int, default=0, metavar="STEPS",
                    help="also search a tap order for fewer sectors (annealing steps; 3000 take about 2 minutes "
                         "at --size 132 132 --stride 1)")
    args = ap.parse_args(argv)
    H, W = args.size
    if H < 8 or W < 8 or args.stride < 1:
        ap.error("--size needs at least 8 x 8 and --stride at least 1")
    cases = {s: sensor_case(s, H, W, args.stride) for s in ("bayer", "xtrans")}
    sample = "every warp" if args.stride == 1 else f"1 warp in {args.stride}"
    print(f"== front MLP tap loads, {H} x {W}, {sample}: 32-byte sectors a warp load")
    print(f"{'sensor':8s} {'row order':10s} {'sectors':>8s} {'loads':>8s}")
    for sensor, (_, P, tap_off, orders) in cases.items():
        for name, (ys, xs) in orders.items():
            print(f"{sensor:8s} {name:10s} {sectors_a_load(tap_off, P, ys, xs, W):8.2f} {2 * len(TAP_BLOCKS) * len(ys):8d}")
    if args.search_tap_order:
        order, _ = search_tap_order(list(cases.values()), W, args.search_tap_order)
        print(f"-- tap order found in {args.search_tap_order} steps (column t reads canonical tap order[t]):")
        print("   " + " ".join(str(int(t)) for t in order))
        for sensor, (_, P, tap_off, orders) in cases.items():
            print(f"{sensor:8s} {'raster':10s} {sectors_a_load(tap_off, P, *orders['raster'], W, order):8.2f}"
                  "  with that order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
