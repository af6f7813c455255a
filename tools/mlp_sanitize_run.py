#!/usr/bin/env python3
"""A short run of every fused MLP kernel path, for compute-sanitizer:

    compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py
    compute-sanitizer --tool racecheck python tools/mlp_sanitize_run.py --widths 64

Forward and backward (dL/dx and every dL/dW) of the plain op at sizes from
one row to several tiles a block (so that blocks stage a second tile, and the
last tile is partial), and of the grouped op (permuted rows), for the colour
and front shapes at hidden widths 64 and 128.  ``--guide`` adds the guide's
training passes (kernels/guide_train.cu) through its fused network
(float32 and bfloat16, widths 64 and 128 and 24 and 32, position counts
that leave a block partial; float32 also on the TF32 projection kernels);
``--adjoints`` the backward kernels of the pyramid's up and of up_block (odd
and tiny sizes, both sensors).  Prints "done" at the end; the sanitizer's summary says
whether any access was wrong.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kbench_common import SLOPE, make_weights, make_x  # noqa: E402

SIZES = (1, 129, 300, 5_003, 20_000)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--widths", type=int, nargs="+", default=[64, 128], choices=(64, 128))
    p.add_argument("--guide", action="store_true", help="also the guide's training passes")
    p.add_argument("--adjoints", action="store_true", help="also up's and up_block's adjoint (backward) kernels")
    p.add_argument("--no-mlp", action="store_true", help="skip the MLP kernels")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("mlp_sanitize_run.py: needs a CUDA GPU", file=sys.stderr)
        return 1
    from kpnt.ops import _cuda

    for hidden in [] if args.no_mlp else args.widths:
        for n_out, n_hidden in ((16, 6), (80 if hidden == 128 else 32, 4)):
            dims = [32, hidden, n_out, n_hidden]
            for P in SIZES:
                ws = make_weights(dims, seed=P)
                x = make_x(P, dims[0], seed=P + 1).requires_grad_()
                torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), [x, *ws], torch.randn(P, n_out, device="cuda"))
            wg = make_weights(dims, groups=4, seed=3)
            cls = torch.randint(0, 3, (9_001,), device="cuda")
            torch.autograd.grad(_cuda.fused_mlp_grouped(make_x(9_001, dims[0]), cls, wg, SLOPE), wg,
                                torch.randn(9_001, n_out, device="cuda"))
            print(f"{dims}: ok", flush=True)
    if args.guide:
        from kpnt.ops._cuda import guide_train
        from kpnt.ops._cuda.guide_train import fused_guide_network
        from kpnt.ref.guide import guide_channels, init_guide

        # bfloat16 at widths 32, 64 and 128 runs the fused projection backward (partial tiles at each)
        for width, period, size in ((64, 2, (2, 37, 45)), (128, 6, (1, 19, 23)), (24, 2, (1, 5, 7)),
                                    (32, 2, (1, 3, 5))):
            g = torch.Generator().manual_seed(width)
            ws = [w.cuda().requires_grad_() for w in init_guide(period, width, 3, g, skip=True, proj=True)]
            z = torch.randn(size[0], guide_channels(period)[0], *size[1:], device="cuda").requires_grad_()
            for dtype in (torch.float32, torch.bfloat16):
                out = fused_guide_network(z, ws, dtype)
                torch.autograd.grad(out, [z, *ws], torch.randn_like(out))
            if width in guide_train.PROJ_WIDTHS:       # the float32 projection kernels (TF32 twins), routed or not,
                saved = (guide_train.FUSED_PROJ_TF32, guide_train.TF32_WIDTHS, guide_train.FUSED_PROJ_PROLOGUE,
                         torch.backends.cudnn.allow_tf32)
                guide_train.FUSED_PROJ_TF32, guide_train.TF32_WIDTHS = True, guide_train.PROJ_WIDTHS
                torch.backends.cudnn.allow_tf32 = True
                try:
                    out = fused_guide_network(z, ws, torch.float32)
                    torch.autograd.grad(out, [z, *ws], torch.randn_like(out))
                    # and every projection forward the other way: with its prologue if the default has none,
                    # without it if the default has it (on since session 37), so both kernels run either way
                    guide_train.FUSED_PROJ_PROLOGUE = not saved[2]
                    for dtype in (torch.float32, torch.bfloat16):
                        out = fused_guide_network(z, ws, dtype)
                        torch.autograd.grad(out, [z, *ws], torch.randn_like(out))
                finally:
                    (guide_train.FUSED_PROJ_TF32, guide_train.TF32_WIDTHS, guide_train.FUSED_PROJ_PROLOGUE,
                     torch.backends.cudnn.allow_tf32) = saved
            print(f"guide width {width}: ok", flush=True)
    if args.adjoints:
        from kpnt.mosaic.cfa import CFA

        for H, W in ((1, 1), (2, 3), (19, 23), (301, 517)):
            c = torch.rand(2, 3, (H + 1) // 2, (W + 1) // 2, device="cuda", requires_grad=True)
            torch.autograd.grad(_cuda.fused_pyramid_up(c, (H, W)).sum(), c)
        for cfa in (CFA.bayer("RGGB"), CFA.xtrans(0, 0)):
            for h, w in ((1, 1), (5, 7), (64, 37)):
                o = torch.rand(2, 3, h, w, device="cuda", requires_grad=True)
                torch.autograd.grad(_cuda.fused_up_block(o, cfa).sum(), o)
        print("adjoints: ok", flush=True)
    torch.cuda.synchronize()
    print("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
