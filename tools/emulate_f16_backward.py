"""Emulate the fused backward's f16 arithmetic on the CPU, per weight set.

A diagnostic for issue 14's open question (docs/KERNELS.md): on the shipped
X-Trans model two weight sets' fused gradients sit 1.6-1.7e-2 from the
f16-rounding float64 reference, the others within 5e-3.  That reference
rounds the forward pass like the kernels (inputs, weights, activations) but
keeps dL/dy and every dZ exact.  The kernels instead scale dL/dy per
128-row tile by one power of two (largest magnitude into [0.5, 1)) and keep
every dZ in f16: rows whose gradients are far below their tile's largest
lose precision (f16 subnormals below 6e-5 of it).

This script runs a float64 model on the CPU whose front-level MLPs round the
forward pass like the kernels and whose backward also emulates the kernels'
dZ handling (tile scaling, f16 dZ, per-tile unscaled dW), and prints, per
weight set, its distance from the f16-rounding reference next to that
reference's distance from the exact gradient.  If the emulation reproduces
the GPU's numbers, the tile scaling is the cause.

Usage: python tools/emulate_f16_backward.py [--sensor xtrans] [--size 2 211 299] [--seed S] [--fused]

``--fused`` (GPU) adds the fused kernels' gradients for the same inputs.
Seven CPU seeds (1-7) of the shipped X-Trans model: A 1-4e-5, B <= 2.2e-3,
C 1.6-5.5e-3 for every weight set.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpnt.testing import leaky_relu_f16, mlp_f16_rounded, scale_like_hfma2, reference_mlp, rel_error as rel  # noqa: E402

TILE = 128


def _f16(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float16).to(t.dtype)


def _mm(a: torch.Tensor, b: torch.Tensor, f32: bool) -> torch.Tensor:
    """a @ b of f16-valued operands, accumulated in float64, or in float32
    like the tensor cores (another summation order: only the precision is
    alike)."""
    return (a.float() @ b.float()).double() if f32 else a @ b


class _KernelLikeMlp(torch.autograd.Function):
    """Forward: mlp_f16_rounded (accumulated in float64, or float32 with
    ``f32``).  Backward: the fused kernels' dZ arithmetic."""

    @staticmethod
    def forward(ctx, x, slope, f32, *ws):
        acts = [_f16(x)]
        h = acts[0]
        for w in ws[:-1]:
            h = leaky_relu_f16(_mm(h, _f16(w).t(), f32), slope)
            acts.append(h)
        ctx.save_for_backward(*acts, *ws)
        ctx.slope, ctx.n = slope, len(ws)
        return _mm(h, _f16(ws[-1]).t(), f32)

    @staticmethod
    def backward(ctx, dy):
        saved = ctx.saved_tensors
        n = ctx.n
        acts, ws = saved[:n], saved[n:]
        P = dy.shape[0]
        # per-tile power of two: largest |dy| of the tile into [0.5, 1)
        mx = F.pad(dy.abs().amax(1), (0, (-P) % TILE)).view(-1, TILE).amax(1)
        _, e = torch.frexp(torch.where(mx > 0, mx, torch.ones_like(mx)))
        inv_s = torch.where(mx > 0, torch.ldexp(torch.ones_like(mx), e), torch.ones_like(mx))
        inv_row = inv_s.repeat_interleave(TILE)[:P, None]
        dz = _f16(dy / inv_row)
        dws = [None] * n
        for m in range(n - 1, -1, -1):
            a = acts[m]
            # dW_m: per-tile products of f16 operands, unscaled per tile
            dws[m] = (dz * inv_row).t() @ a
            da = dz @ _f16(ws[m])
            if m > 0:
                # The kernels round dA to f16, then scale it by 1 or the slope as
                # hi + lo (kernels/mlp_core.cuh lrelu_grad_frags), rounding once more.
                da16 = _f16(da)
                dz = torch.where(a > 0, da16, scale_like_hfma2(da16, ctx.slope))
        dx = da * inv_row
        return (dx, None, None, *dws)


def kernel_like_mlp(x, ws, slope):
    return _KernelLikeMlp.apply(x, slope, False, *ws)


def kernel_like_mlp_f32(x, ws, slope):
    return _KernelLikeMlp.apply(x, slope, True, *ws)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sensor", default="xtrans", choices=["bayer", "xtrans"])
    ap.add_argument("--size", type=int, nargs=3, default=[2, 211, 299], metavar=("N", "H", "W"))
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--fused", action="store_true",
                    help="also run the same inputs through the fused kernels (needs a GPU): column D")
    args = ap.parse_args(argv)
    from kpnt.mosaic.cfa import reference_cfa
    from kpnt.weights_io import load_weights, shipped_weights

    N, H, W = args.size
    g = torch.Generator().manual_seed(args.seed)
    base = F.interpolate(torch.rand(N, 3, H // 16 + 2, W // 16 + 2, generator=g), size=(H, W), mode="bilinear",
                         align_corners=False).double() * 0.6
    cfa = reference_cfa(args.sensor)
    col = torch.from_numpy(cfa.colour_map(H, W)).long().expand(N, 1, H, W)
    x = base.gather(1, col) + torch.randn(N, 1, H, W, generator=g).double() * 0.02
    noise = torch.tensor([[2e-3] * 3, [1e-5] * 3]).double().expand(N, 2, 3).contiguous()
    model = load_weights(shipped_weights(args.sensor), sensor=args.sensor)[0].double()
    model.backend = "torch"
    for p in model.parameters():
        p.requires_grad_(True)
    sets = model.weight_sets()

    def grads(mlp_fn):
        with reference_mlp(mlp_fn) if mlp_fn is not None else contextlib.nullcontext():
            out = model(x, cfa, noise)
            loss = ((out - base).abs() / (out.abs() + base.abs() + 1e-3)).mean()
            return {k: torch.autograd.grad(loss, v, retain_graph=True) for k, v in sets.items()}

    exact, f16ref = grads(None), grads(mlp_f16_rounded)
    emul, emul32 = grads(kernel_like_mlp), grads(kernel_like_mlp_f32)
    fused = None
    if args.fused:
        m32 = load_weights(shipped_weights(args.sensor), sensor=args.sensor)[0].cuda()
        m32.backend = "cuda"
        for p in m32.parameters():
            p.requires_grad_(True)
        sets32 = m32.weight_sets()
        xc, nc, bc = x.float().cuda(), noise.float().cuda(), base.float().cuda()
        out = m32(xc, cfa, nc)
        loss = ((out - bc).abs() / (out.abs() + bc.abs() + 1e-3)).mean()
        fused = {k: [t.double().cpu() for t in torch.autograd.grad(loss, v, retain_graph=True)]
                 for k, v in sets32.items()}
    flat = lambda gs: torch.cat([t.reshape(-1) for t in gs])
    print(f"shipped {args.sensor} model, {N}x{H}x{W}, float64 on the CPU; relative distances of the gradients")
    print("  A: kernel-like backward (tile-scaled f16 dZ) vs the f16-rounding reference")
    print("  B: the same with the forward accumulated in float32 vs the f16-rounding reference")
    print("  C: the f16-rounding reference vs the exact float64 model")
    if fused is not None:
        print("  D: the fused kernels (float32 model on the GPU, same inputs) vs the f16-rounding reference")
    print(f"{'weight set':<22s} {'A':>10s} {'B':>10s} {'C':>10s}" + (f" {'D':>10s}" if fused else ""))
    for k in sets:
        r = flat(f16ref[k])
        print(f"{k:<22s} {rel(flat(emul[k]), r):10.2e} {rel(flat(emul32[k]), r):10.2e} "
              f"{rel(r, flat(exact[k])):10.2e}" + (f" {rel(flat(fused[k]), r):10.2e}" if fused else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
