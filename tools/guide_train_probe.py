#!/usr/bin/env python3
"""The shipped guides' network in training (forward + backward), by path, at
the training step's size (issue 14, point 2: the guide is most of the
shipped step), with each path's error against float64 autograd.

Paths: autograd's float32 (the reference's, NCHW) and bfloat16 (autocast,
channels-last: ``kpnt-train --guide-dtype bfloat16`` before session 31), and
the fused backend's written-out network (:mod:`kpnt.ops._cuda.guide_train`)
in float32 and bfloat16, with its forward epilogues on kpnt's kernel or
inside cuDNN's convolutions (``CUDNN_EPILOGUE``), and in bfloat16 with the
projection blocks' 1x1 on cuDNN's GEMMs and the passes around them instead
of the fused projection kernels: both off (session 31's path), only the
forward's off (session 32's: ``FUSED_PROJ_FORWARD``); and in float32 with
the projection kernels' TF32 twins (``FUSED_PROJ_TF32``, on since session
34; this row runs them at every compiled width, 128 included, whatever
``TF32_WIDTHS`` routes) or without them ("fused f32 1x1 on cuDNN": its TF32
GEMMs and two passes).

    python tools/guide_train_probe.py                 # both sensors, 4 x 512 x 512 mosaics
    python tools/guide_train_probe.py --reps 20

Needs a CUDA GPU.  Prints a table: ms a fwd+bwd (median of CUDA-event
samples), and the output's and the weight gradients' largest relative
error against float64 (TF32 off for that check, but on the TF32 row).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=15)
    p.add_argument("--size", type=int, nargs=3, default=[4, 512, 512], metavar=("N", "H", "W"))
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("guide_train_probe.py: needs a CUDA GPU", file=sys.stderr)
        return 1
    from kbench_common import time_ms
    from kpnt.ops._cuda import guide_train
    from kpnt.ref.guide import _network, guide_channels
    from kpnt.testing import rel_error as rel
    from kpnt.weights_io import load_weights, shipped_weights

    N, H, W = args.size
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(f"{'sensor':<7s} {'path':<34s} {'ms fwd+bwd':>10s} {'out err':>9s} {'max dW err':>10s}")
    defaults = {name: getattr(guide_train, name) for name in
                ("CUDNN_EPILOGUE", "FUSED_PROJ_BACKWARD", "FUSED_PROJ_FORWARD", "FUSED_PROJ_TF32", "TF32_WIDTHS")}
    for sensor in ("bayer", "xtrans"):
        m, _ = load_weights(shipped_weights(sensor))
        ws = [w.detach().cuda().requires_grad_() for w in m.sets["guide"]]
        Q = {"bayer": 2, "xtrans": 6}[sensor] * m.config.guide_pack    # the CFA period times the packing
        h, w = -(-H // Q), -(-W // Q)
        g = torch.Generator("cuda").manual_seed(0)
        z = torch.randn(N, guide_channels(Q)[0], h, w, device="cuda", generator=g).requires_grad_()
        gout = torch.randn(N, 3 * Q * Q, h, w, device="cuda", generator=g) * 1e-6

        def autograd32():
            return _network(z, ws, True, proj=True)

        def autograd_bf16():
            with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
                return _network(z.contiguous(memory_format=torch.channels_last), ws, True, proj=True).float()

        def fused(dtype, epilogue, proj=True, proj_fwd=True, tf32=False):
            def run():
                guide_train.CUDNN_EPILOGUE = epilogue
                guide_train.FUSED_PROJ_BACKWARD, guide_train.FUSED_PROJ_FORWARD = proj, proj_fwd
                guide_train.FUSED_PROJ_TF32 = tf32
                # the TF32 row runs the twins at every width they are compiled for, routed by default or not
                guide_train.TF32_WIDTHS = guide_train.PROJ_WIDTHS if tf32 else defaults["TF32_WIDTHS"]
                return guide_train.fused_guide_network(z, ws, dtype)
            run.tf32 = tf32                         # its kernels run only with cuDNN's TF32 on
            return run

        paths = [("autograd f32 (reference)", autograd32), ("autograd bf16 autocast", autograd_bf16),
                 ("fused f32 1x1 on cuDNN", fused(torch.float32, False)),
                 ("fused f32 cuDNN epilogue", fused(torch.float32, True)),
                 ("fused f32 TF32 projection kernels", fused(torch.float32, False, tf32=True)),
                 ("fused bf16 unfused 1x1", fused(torch.bfloat16, False, proj=False, proj_fwd=False)),
                 ("fused bf16 unfused 1x1 fwd", fused(torch.bfloat16, False, proj_fwd=False)),
                 ("fused bf16", fused(torch.bfloat16, False)),
                 ("fused bf16 cuDNN epilogue", fused(torch.bfloat16, True))]
        zd, wd = z.detach().double().requires_grad_(), [t.detach().double().requires_grad_() for t in ws]
        ref = _network(zd, wd, True, proj=True)
        ref_g = torch.autograd.grad(ref, wd, gout.double())
        ref = ref.detach()
        for name, fn in paths:
            def step():
                out = fn()
                return torch.autograd.grad(out, [z, *ws], gout)
            try:
                tf32 = torch.backends.cudnn.allow_tf32
                # TF32 off for the errors, but on the TF32 kernels' path (they run only with it on)
                torch.backends.cudnn.allow_tf32 = getattr(fn, "tf32", False)
                try:
                    out = fn()
                    got = torch.autograd.grad(out, ws, gout)
                finally:
                    torch.backends.cudnn.allow_tf32 = tf32
                e_out = rel(out.double(), ref)
                e_w = max(rel(a.double(), b) for a, b in zip(got, ref_g))
                del out, got
                ms = time_ms(step, reps=args.reps, warmup=3, batch=3)[0]
                print(f"{sensor:<7s} {name:<34s} {ms:10.3f} {e_out:9.2e} {e_w:10.2e}", flush=True)
            except Exception as e:                          # reported; the other paths still run
                print(f"{sensor:<7s} {name:<34s} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}",
                      flush=True)
        for name, value in defaults.items():
            setattr(guide_train, name, value)
        del z, ws, zd, wd, ref
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
