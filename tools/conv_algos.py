#!/usr/bin/env python3
"""cuDNN's 3x3 convolutions of the guide's training, one pass at a time
(issue 14, point 2): forward, data gradient and weight gradient of a
``C -> C`` 3x3 convolution at the shipped guides' shapes, in each memory
layout, dtype and cuDNN algorithm policy, with the rate each reaches and
the error of its result against float64.

    python tools/conv_algos.py                                  # both shipped guide shapes
    python tools/conv_algos.py --shapes 4x64x258x258 --reps 50

The graphed training step spends about 6 ms of 13 in these passes with the
float32 guide (TF32) and 2.2 of 7.5 with the bfloat16 one (session 35's
breakdown); cuDNN's TF32 weight gradient reached ~100 TFLOP/s there against
~420 for bfloat16.  This asks whether another layout (NCHW: cuDNN then runs
other kernels, at the price of two transposes a pass, timed separately)
or autotuning (``cudnn.benchmark``) gives a faster pass on this GPU, and
(unless ``--no-kpnt``) how kpnt's own TF32 weight-gradient kernel
(kernels/guide_wgrad.cu, session 38) compares.

Errors are relative RMS against the float64 result of the same operands
(one image of the shape)
(the TF32 passes' ~1e-3 is TF32's input rounding).  Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

PASSES = ("fprop", "dgrad", "wgrad")


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """``NxCxHxW`` as a tuple of ints."""
    parts = tuple(int(v) for v in text.lower().split("x"))
    if len(parts) != 4 or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"shape {text!r} is not NxCxHxW with positive sizes")
    return parts


def operands(shape, dtype, layout, seed=0):
    """``(z, w, g)``: activations (ReLU'd, O(1)), weights (He scale) and an
    output gradient (O(1e-4)) of a 3x3 ``C -> C`` convolution in ``dtype``
    and ``layout`` (``'nhwc'``: channels-last, ``'nchw'``: contiguous)."""
    N, C, H, W = shape
    g = torch.Generator("cuda").manual_seed(seed)
    z = torch.randn(N, C, H, W, device="cuda", generator=g).relu_()
    w = torch.randn(C, C, 3, 3, device="cuda", generator=g) * (2.0 / (9 * C)) ** 0.5
    gy = torch.randn(N, C, H, W, device="cuda", generator=g) * 1e-4
    fmt = torch.channels_last if layout == "nhwc" else torch.contiguous_format
    return tuple(t.to(dtype=dtype, memory_format=fmt) for t in (z, w, gy))


def run_pass(name, z, w, gy):
    """One pass's result: the convolution's output, or its input or weight gradient."""
    if name == "fprop":
        return F.conv2d(z, w, None, padding=1)
    mask = [name == "dgrad", name == "wgrad", False]
    gz, gw, _ = torch.ops.aten.convolution_backward(gy, z, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1, mask)
    return gz if name == "dgrad" else gw


def time_ms(fn, reps: int) -> float:
    """Median milliseconds a call of ``fn()`` (kbench_common.time_ms: CUDA events over batches after a warm-up)."""
    from kbench_common import time_ms as timed

    return timed(fn, reps=reps)[0]


def rel_rms(x: torch.Tensor, ref: torch.Tensor) -> float:
    d = x.double() - ref
    return (d.square().mean() / ref.square().mean()).sqrt().item()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # The guides' grids at a 4 x 512 x 512 batch: the mosaic padded by the front level's margin of 2 on each side
    # (516 x 516) in whole blocks of 2 (Bayer: 258) or 6 (X-Trans: 86).  Sessions 38-41 timed Bayer's at 256.
    p.add_argument("--shapes", nargs="+", type=parse_shape, default=[(4, 64, 258, 258), (4, 128, 86, 86)],
                   help="NxCxHxW of the convolution's input (default: the shipped Bayer and X-Trans guides' "
                        "training shapes at 4 x 512 x 512)")
    p.add_argument("--reps", type=int, default=30)
    p.add_argument("--no-kpnt", action="store_true",
                   help="leave out kpnt's own TF32 weight-gradient kernel (kernels/guide_wgrad.cu)")
    args = p.parse_args()
    if not torch.cuda.is_available():
        print("conv_algos.py: needs a CUDA GPU", file=sys.stderr)
        return 1
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    kpnt_wgrad = None
    if not args.no_kpnt:
        from kpnt.ops._cuda.extension import ext, unwrap

        from kpnt.ops._cuda.guide_block import wgmma_built

        def kpnt_wgrad(gy, z, form=(False, False)):
            """kpnt's weight-gradient kernel as (C_out, C_in, 3, 3), like cuDNN's (``form``: (wgmma, specialized))."""
            return unwrap(ext().guide_wgrad(gy, z, *form)).permute(0, 3, 1, 2)
    print(f"# {torch.cuda.get_device_name()}, torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}")
    print("| shape | pass | dtype | layout | cudnn.benchmark | ms | TFLOP/s | rel. RMS error vs float64 |")
    print("| --- | --- | --- | --- | --- | ---: | ---: | ---: |")
    for shape in args.shapes:
        N, C, H, W = shape
        flop = 2.0 * N * H * W * C * C * 9
        one = (1, C, H, W)                       # errors on one image: cuDNN's float64 passes are slow
        ref_ops = operands(one, torch.float64, "nchw")
        refs = {name: run_pass(name, *ref_ops) for name in PASSES}
        del ref_ops
        for dtype in (torch.float32, torch.bfloat16):
            for layout in ("nhwc", "nchw"):
                ops = operands(shape, dtype, layout)
                ops_one = operands(one, dtype, layout)
                for bench in (False, True):
                    torch.backends.cudnn.benchmark = bench
                    for name in PASSES:
                        err = rel_rms(run_pass(name, *ops_one), refs[name])
                        ms = time_ms(lambda: run_pass(name, *ops), args.reps)
                        print(f"| {N}x{C}x{H}x{W} | {name} | {str(dtype).split('.')[1]} | {layout} | "
                              f"{'on' if bench else 'off'} | {ms:.4f} | {flop / ms / 1e9:.0f} | {err:.2e} |",
                              flush=True)
                del ops
        torch.backends.cudnn.benchmark = False
        if kpnt_wgrad is not None and C in (64, 128):
            z, _, gy = operands(shape, torch.float32, "nhwc")
            z1, _, gy1 = operands(one, torch.float32, "nhwc")
            forms = {"mma.sync": (False, False)}
            if wgmma_built(torch.cuda.current_device()):
                forms.update({"wgmma": (True, False), "warp-specialized wgmma": (True, True)})
            for name, form in forms.items():
                err = rel_rms(kpnt_wgrad(gy1, z1, form), refs["wgrad"])
                ms = time_ms(lambda: kpnt_wgrad(gy, z, form), args.reps)
                print(f"| {N}x{C}x{H}x{W} | wgrad, kpnt's TF32 kernel, {name} form "
                      f"(summed blocks included) | float32 | nhwc | - | {ms:.4f} | {flop / ms / 1e9:.0f} | {err:.2e} |",
                      flush=True)
            del z, gy
        # What a layout change would cost: one NHWC <-> NCHW transpose of an activation in float32 and bfloat16.
        for dtype in (torch.float32, torch.bfloat16):
            x = torch.randn(N, C, H, W, device="cuda", dtype=dtype).contiguous(memory_format=torch.channels_last)
            ms = time_ms(lambda: x.contiguous(), args.reps)
            print(f"| {N}x{C}x{H}x{W} | transpose NHWC -> NCHW | {str(dtype).split('.')[1]} | - | - | {ms:.4f} | - | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
