"""Time one projection-guide block the way kpnt runs it at inference, for
tools/projblock_probe (the same run's baseline): cuDNN's 3x3 convolution with
bias and ReLU in its epilogue, then its 1x1 with the skip add and ReLU in its
epilogue (kpnt/ref/guide.py ``_cudnn_conv_relu``, ``_cudnn_conv_add_relu``),
float16, channels-last, at the shipped Bayer guide's 24-MP size
(1 x 64 x 2001 x 3003).  Prints the median ms a block over CUDA events after
warm-up, and the last line is that number alone (the probe's argument).

Usage: python tools/projblock_probe/cudnn_block.py [--reps 20] [--height 2001 --width 3003]
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from kpnt.ref.guide import _cudnn_conv_add_relu, _cudnn_conv_relu  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--height", type=int, default=2001)
    ap.add_argument("--width", type=int, default=3003)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("cudnn_block.py: needs a CUDA GPU")
    torch.backends.cudnn.benchmark = False  # as kpnt-denoise runs (docs/KERNELS.md, session 12)
    dev, f16, cl = "cuda", torch.float16, torch.channels_last
    g = torch.Generator(device=dev).manual_seed(0)
    z = torch.rand(1, 64, args.height, args.width, device=dev, generator=g).to(f16).contiguous(memory_format=cl)
    w = (torch.randn(64, 64, 3, 3, device=dev, generator=g) * (2 / 576) ** 0.5).to(f16)
    p = (torch.randn(64, 64, 1, 1, device=dev, generator=g) * (1 / 64) ** 0.5).to(f16)
    b = torch.zeros(64, device=dev, dtype=f16)
    c = torch.zeros(64, device=dev, dtype=f16)

    def block():
        return _cudnn_conv_add_relu(_cudnn_conv_relu(z, w, b), p, c, z)

    with torch.no_grad():
        for _ in range(3):
            block()
        torch.cuda.synchronize()
        times = []
        for _ in range(args.reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            block()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
    ms = statistics.median(times)
    print(f"cuDNN block (3x3+bias+ReLU, 1x1+add+ReLU), 1 x 64 x {args.height} x {args.width} f16 channels-last, "
          f"{torch.cuda.get_device_name()}: median {ms:.3f} ms of {args.reps} (min {min(times):.3f})")
    print(f"{ms:.4f}")


if __name__ == "__main__":
    main()
