"""Timings of tools/bench_kernels.py: MLP throughput against the arithmetic
ceiling, grouped MLP, whole-model training steps (eager, compiled, graphed),
24-MP inference, and the training-parity run."""
from __future__ import annotations

import json
import sys
import time
import traceback

import torch
import torch.nn.functional as F

from kpnt.ops import _cuda
from kpnt.ops._cuda import mlp as mlp_op
from kpnt.ops._cuda.guide_block import wgmma_built
from kpnt.ops.weights import MlpWeights
from kpnt.mosaic.kinds import MOSAIC_KINDS
from kbench_checks import shipped_model, step_batch, step_cfas, step_loss
from kbench_common import (
    BAYER, COLOUR, FRONT, SLOPE, bench_cfa, gpu_kernels, make_weights, make_x, model_inputs, smape_loss, time_ms,
    torch_mlp,
)


def ceilings():
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.float16)
    ms, _, _ = time_ms(lambda: a @ b, reps=10, warmup=3)
    tflops = 2 * 8192**3 / (ms * 1e-3) / 1e12
    src = torch.empty(1 << 28, dtype=torch.float32, device="cuda").uniform_()
    dst = torch.empty_like(src)
    ms_c, _, _ = time_ms(lambda: dst.copy_(src), reps=10, warmup=3)
    tbs = 2 * src.numel() * 4 / (ms_c * 1e-3) / 1e12
    del a, b, src, dst
    return tflops, tbs


def flops_per_pixel(dims):
    n_in, h, n_out, nh = dims
    nw = h * n_in + (nh - 1) * h * h + n_out * h
    fwd = 2 * nw
    # backward kernel: forward recompute without the output layer, dA for
    # every matrix but the first, dW for all.
    bwd = 2 * (nw - n_out * h) + 2 * (nw - h * n_in) + 2 * nw
    return fwd, bwd


def timings(P, reps, do_compile, dims=COLOUR):
    """Colour-MLP throughput of shape ``dims`` (fused, eager f32/f16,
    optionally torch.compile f16); rows named after the width when it is
    not the default's 64."""
    rows = []
    suffix = "" if dims[1] == COLOUR[1] else f" w{dims[1]}"
    ws = make_weights(dims, seed=11)
    x = make_x(P, dims[0], seed=12)
    gy = torch.randn(P, dims[2], device="cuda")

    def fused_f():
        with torch.no_grad():
            _cuda.fused_mlp(x, ws, SLOPE)

    def fused_fb():
        torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), ws, gy)

    xr = x.clone().requires_grad_()

    def fused_fb_dx():
        torch.autograd.grad(_cuda.fused_mlp(xr, ws, SLOPE), [xr, *ws], gy)

    def eager_f():
        with torch.no_grad():
            torch_mlp(x, ws)

    def eager_fb():
        torch.autograd.grad(torch_mlp(x, ws), ws, gy)

    ws16 = [w.detach().half().requires_grad_() for w in ws]
    x16, gy16 = x.half(), gy.half()

    def eager16_f():
        with torch.no_grad():
            torch_mlp(x16, ws16)

    def eager16_fb():
        torch.autograd.grad(torch_mlp(x16, ws16), ws16, gy16)

    cases = [
        ("fused fwd", fused_f),
        ("fused fwd+bwd (dW)", fused_fb),
        ("fused fwd+bwd (dW, dx)", fused_fb_dx),
        ("eager f32 fwd", eager_f),
        ("eager f32 fwd+bwd", eager_fb),
        ("eager f16 fwd", eager16_f),
        ("eager f16 fwd+bwd", eager16_fb),
    ]
    if do_compile:
        # f16, like the fused kernels' tensor-core operands (f32 compile runs
        # at eager f32 speed: the matmuls dominate).
        cmlp = torch.compile(torch_mlp)

        def comp_f():
            with torch.no_grad():
                cmlp(x16, ws16)

        def comp_fb():
            torch.autograd.grad(cmlp(x16, ws16), ws16, gy16)

        cases += [("compile f16 fwd", comp_f), ("compile f16 fwd+bwd", comp_fb)]

    cases = [(name + suffix, fn) for name, fn in cases]
    res = {}
    for name, fn in cases:
        t0 = time.perf_counter()
        ms, lo, hi = time_ms(fn, reps=reps)
        res[name] = ms
        print(f"  time {name:<28s} {ms:8.3f} ms  [{lo:.3f}, {hi:.3f}]  {P / ms / 1e6:6.2f} Gpix/s"
              f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    # Same-version repeat: the spread that any difference must exceed.
    res["fused fwd (repeat)" + suffix] = time_ms(fused_f, reps=reps)[0]
    res["fused fwd+bwd (dW) (repeat)" + suffix] = time_ms(fused_fb, reps=reps)[0]
    # What a call costs besides the kernel (session 23: the kernel alone ran the
    # colour MLP at 7.9 Gpix/s in tools/wgmma_probe, this op at 6.6): the
    # weights packed once, as kpnt.model does per forward, and 4x the rows, over
    # which a fixed cost per call spreads.
    packed = MlpWeights(ws)

    def fused_f_packed():
        with torch.no_grad():
            _cuda.fused_mlp(x, packed, SLOPE)

    x4 = x.repeat(4, 1)

    def fused_f_4p():
        with torch.no_grad():
            _cuda.fused_mlp(x4, packed, SLOPE)

    name4 = "fused fwd, weights packed once, 4 P rows" + suffix
    res["fused fwd, weights packed once" + suffix] = time_ms(fused_f_packed, reps=reps)[0]
    res[name4] = time_ms(fused_f_4p, reps=reps)[0]
    print(f"  time {name4:<28s} {res[name4]:8.3f} ms  {4 * P / res[name4] / 1e6:6.2f} Gpix/s", flush=True)
    row_counts = {name4: 4 * P}  # rows a call of each timing covers, where not P
    def time_switched(switches: dict, cases) -> None:
        """Time ``cases`` ((name, fn, rows a call)) with kpnt.ops._cuda.mlp's
        ``switches`` set for these rows only, whatever kpnt ships."""
        before = {k: getattr(mlp_op, k) for k in switches}
        try:
            for k, v in switches.items():
                setattr(mlp_op, k, v)
            for name, fn, n_rows in cases:
                name += suffix
                res[name], row_counts[name] = time_ms(fn, reps=reps)[0], n_rows
                print(f"  time {name:<28s} {res[name]:8.3f} ms  {n_rows / res[name] / 1e6:6.2f} Gpix/s", flush=True)
        finally:
            for k, v in before.items():
                setattr(mlp_op, k, v)

    # The forward on the wgmma kernel (kernels/mlp_wgmma.cuh), where the GPU runs it.
    if dims[1] in (64, 128) and wgmma_built(torch.cuda.current_device()):
        time_switched({"WGMMA_FORWARD": True},
                      (("fused fwd (wgmma)", fused_f, P),
                       ("fused fwd, weights packed once, 4 P rows (wgmma)", fused_f_4p, 4 * P)))
    if mlp_op.use_wgmma_backward(x, dims, switch=True):
        # The backward on wgmma (kernels/mlp_bwd_wgmma.cuh, width 64; mlp_dw_wgmma.cuh, width 128), forward too.
        time_switched({"WGMMA_FORWARD": True, "WGMMA_BACKWARD": True},
                      (("fused fwd+bwd (dW) (wgmma fwd+bwd)", fused_fb, P),
                       ("fused fwd+bwd (dW, dx) (wgmma fwd+bwd)", fused_fb_dx, P)))
        # The same on the mma.sync backward: what the wgmma rows gain.
        time_switched({"WGMMA_BACKWARD": False}, (("fused fwd+bwd (dW) (mma.sync bwd)", fused_fb, P),))
    if dims[1] == 128:
        # The 128-wide forwards on mma.sync; and the backward recomputing the activations where the training
        # forward stores them (mlp_op.STORE_FORWARD).
        time_switched({"WGMMA_FORWARD_128": False}, (("fused fwd (mma.sync fwd)", fused_f, P),
                                                     ("fused fwd+bwd (dW) (mma.sync fwd)", fused_fb, P)))
        time_switched({"STORE_FORWARD": False}, (("fused fwd+bwd (dW) (recomputing bwd)", fused_fb, P),))
    del x4
    for name, ms in res.items():
        rows.append((name, ms, row_counts.get(name, P) / ms / 1e6))
    return rows, res


def grouped_timings(P, reps):
    dims, G = FRONT, 3
    wg = make_weights(dims, groups=G, seed=21)
    x = make_x(P, dims[0], seed=22)
    gy = torch.randn(P, dims[2], device="cuda")
    # X-Trans-like: classes tile the image in a fixed 6x6 pattern (row-major pixels).
    H = 2048
    W = P // H
    P = H * W
    x, gy = x[:P], gy[:P]
    pat = torch.tensor([[0, 2, 0, 0, 2, 0], [2, 1, 2, 2, 1, 2], [0, 2, 0, 0, 2, 0]] * 2, device="cuda")
    cls = pat[torch.arange(H, device="cuda")[:, None] % 6, torch.arange(W, device="cuda")[None, :] % 6].reshape(-1)
    part = _cuda.partition_by_class(cls, G)
    idx = [(cls == c).nonzero().squeeze(1) for c in range(G)]
    w1 = [w[0].detach().requires_grad_() for w in wg]

    def gather_f():
        with torch.no_grad():
            _cuda.fused_mlp_grouped(x, part, wg, SLOPE)

    def gather_fb():
        torch.autograd.grad(_cuda.fused_mlp_grouped(x, part, wg, SLOPE), wg, gy)

    def split(ws_list):
        out = x.new_empty(P, dims[2])
        for c in range(G):
            out = out.index_copy(0, idx[c], _cuda.fused_mlp(x[idx[c]], [w[c] for w in ws_list], SLOPE))
        return out

    def split_f():
        with torch.no_grad():
            split(wg)

    def split_fb():
        torch.autograd.grad(split(wg), wg, gy)

    def single_f():
        with torch.no_grad():
            _cuda.fused_mlp(x, w1, SLOPE)

    def single_fb():
        torch.autograd.grad(_cuda.fused_mlp(x, w1, SLOPE), w1, gy)

    def partition():
        _cuda.partition_by_class(cls, G)

    rows = []
    for name, fn in [
        ("front G=3 gather fwd", gather_f),
        ("front G=3 gather fwd+bwd", gather_fb),
        ("front G=3 split fwd", split_f),
        ("front G=3 split fwd+bwd", split_fb),
        ("front G=1 (bound) fwd", single_f),
        ("front G=1 (bound) fwd+bwd", single_fb),
        ("front partition_by_class", partition),
    ]:
        ms, lo, hi = time_ms(fn, reps=reps)
        print(f"  time {name:<28s} {ms:8.3f} ms  [{lo:.3f}, {hi:.3f}]  {P / ms / 1e6:6.2f} Gpix/s", flush=True)
        rows.append((name, ms, P / ms / 1e6))
    return rows, P


def train_step_fn(m, x, cfa, noise, target, compiled=False):
    opt = torch.optim.Adam(m.parameters(), lr=1e-5)
    fwd = torch.compile(m) if compiled else m

    def step():
        opt.zero_grad(set_to_none=True)
        loss = smape_loss(fwd(x, cfa, noise), target)
        loss.backward()
        opt.step()

    return step


def model_timings(reps):
    """Training step (forward, loss, backward to all weight sets, Adam) and
    24-MP Bayer inference, reference vs fused backend."""
    from kpnt.model import KPNT

    rows, res = [], {}
    N, H, W = 4, 512, 512
    for sensor in MOSAIC_KINDS:
        x, cfa, noise, target = model_inputs(sensor, N, H, W, seed=3)
        for be in ("torch", "cuda"):
            m = KPNT(sensor, backend=be).cuda()
            ms = time_ms(train_step_fn(m, x, cfa, noise, target), reps=reps, warmup=2, batch=3)[0]
            key = f"train step {sensor} {N}x{H}x{W} {be}"
            res[key] = ms
            rows.append((key, ms, N * H * W / ms / 1e6))
            print(f"  time {key:<40s} {ms:8.2f} ms", flush=True)
            del m
    # Where the fused step's time goes (GPU kernels by total time; CPU wall).
    x, cfa, noise, target = model_inputs(BAYER, N, H, W, seed=3)
    m = KPNT(BAYER, backend="cuda").cuda()
    step = train_step_fn(m, x, cfa, noise, target)
    step()
    kernels = gpu_kernels(step)
    gpu_ms = sum(ms for _, ms, _ in kernels)
    n_launch = sum(n for _, _, n in kernels)
    print(f"  profile fused train step bayer: GPU kernel time {gpu_ms:.2f} ms/step, {n_launch:.0f} kernels/step", flush=True)
    for name, ms, n in kernels[:14]:
        print(f"    {ms:7.3f} ms  x{n:5.0f}  {name[:90]}", flush=True)
    res["profile gpu ms/step (fused bayer)"] = gpu_ms
    res["profile kernels/step (fused bayer)"] = n_launch
    del m
    x24, cfa, noise, _ = model_inputs(BAYER, 1, 4000, 6000, seed=4)
    for be in ("torch", "cuda"):
        m = KPNT(BAYER, backend=be).cuda()

        def infer():
            with torch.inference_mode():
                m(x24, cfa, noise)

        try:
            ms = time_ms(infer, reps=5, warmup=1, batch=1)[0]
            key = f"inference bayer 24 MP {be}"
            res[key] = ms
            rows.append((key, ms, 24.0 / ms))
            print(f"  time {key:<40s} {ms:8.2f} ms", flush=True)
        except torch.OutOfMemoryError as e:
            print(f"  inference 24 MP {be}: out of memory ({str(e).splitlines()[0]})", flush=True)
        del m
        torch.cuda.empty_cache()
    rows_u, res_u = up_block_timings(reps)
    return rows + rows_u, {**res, **res_u}


def up_block_timings(reps: int):
    """up_block at 24-MP Bayer size (the model calls it twice a forward):
    the reference and each fused kernel, every fused result first checked
    bitwise against the reference's."""
    from kpnt.mosaic.cfa import CFA
    from kpnt.ops._cuda.up_block import KERNELS, fused_up_block
    from kpnt.ref.up_block import up_block as ref_up_block

    rows, res = [], {}
    cfa = CFA.bayer("RGGB")
    o0 = torch.rand(1, 3, 2003, 3005, device="cuda")               # the padded 24-MP mosaic's colour base
    with torch.no_grad():
        want = ref_up_block(o0, cfa)
        cases = [("reference", lambda: ref_up_block(o0, cfa))]
        for kernel in KERNELS:
            if not torch.equal(fused_up_block(o0, cfa, kernel), want):
                print(f"  up_block {kernel}: NOT bitwise the reference's result: not timed", flush=True)
                continue
            cases.append((kernel, lambda k=kernel: fused_up_block(o0, cfa, k)))
        for name, fn in cases:
            ms = time_ms(fn, reps=reps)[0]
            key = f"up_block 24 MP {name}"
            res[key] = ms
            rows.append((key, ms, want.numel() / 3 / ms / 1e6))
            print(f"  time {key:<40s} {ms:8.3f} ms", flush=True)
    del want
    torch.cuda.empty_cache()
    return rows, res


def inference_timings(reps: int):
    """24-MP inference (6000 x 4000), reference vs fused: the shipped models
    and DESIGN.md's default architecture (untrained; speed does not depend
    on the weights)."""
    from kpnt.model import KPNT

    rows, res = [], {}
    for sensor in MOSAIC_KINDS:
        x24, cfa, noise, _ = model_inputs(sensor, 1, 4000, 6000, seed=4)
        for arch in ("shipped", "default"):
            for be in ("torch", "cuda"):
                m = (shipped_model(sensor) if arch == "shipped" else KPNT(sensor)).cuda()
                m.backend = be

                def infer():
                    with torch.inference_mode():
                        m(x24, cfa, noise)

                torch.cuda.reset_peak_memory_stats()
                ms = time_ms(infer, reps=reps, warmup=1, batch=1)[0]
                peak = torch.cuda.max_memory_allocated() / 2**30
                key = f"inference {sensor} 24 MP {arch} {be}"
                res[key] = ms
                rows.append((key, ms, peak))
                print(f"  time {key:<44s} {ms:9.2f} ms  peak {peak:5.2f} GiB", flush=True)
                del m
                torch.cuda.empty_cache()
        del x24
    return rows, res


def compile_step_timing(reps):
    """torch.compile of the reference training step (run in a subprocess with a time limit)."""
    from kpnt.model import KPNT

    import torch._dynamo

    # The reference builds its constant index tensors with numpy inside
    # lru-cached functions, and CFA objects freeze numpy arrays (setflags):
    # dynamo cannot trace those (first attempt: "ndarray has no attribute
    # setflags").  Keep them out of the trace and let frames dynamo still
    # cannot handle run eagerly: the compiled baseline is then the reference
    # with everything dynamo can take compiled.
    torch._dynamo.config.suppress_errors = True
    for mod in [m for name, m in list(sys.modules.items()) if name.startswith("kpnt.") and m is not None]:
        for name, f in list(vars(mod).items()):
            if callable(f) and hasattr(f, "cache_info"):
                setattr(mod, name, torch.compiler.disable(f))
    from kpnt.mosaic.cfa import CFA

    CFA.crop = torch.compiler.disable(CFA.crop)
    x, cfa, noise, target = model_inputs(BAYER, 4, 512, 512, seed=3)
    m = KPNT(BAYER, backend="torch").cuda()
    step = train_step_fn(m, x, cfa, noise, target, compiled=True)
    t0 = time.perf_counter()
    step()
    torch.cuda.synchronize()
    compile_s = time.perf_counter() - t0
    ms = time_ms(step, reps=reps, warmup=2, batch=3)[0]
    print(json.dumps({"compile_s": compile_s, "ms": ms}), flush=True)


def smooth_scenes(n, size, gen):
    """Random smooth scenes with a few sharp edges, linear sRGB in [0, 1]."""
    lo = torch.rand(n, 3, 6, 6, generator=gen)
    img = F.interpolate(lo, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for k in range(n):
        for _ in range(3):
            cy, cx, r = (torch.rand(3, generator=gen) * torch.tensor([size, size, size / 3])).tolist()
            mask = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
            img[k][:, mask] = torch.rand(3, 1, generator=gen)
    return img ** 2.2


def parity_run(steps, seed=0, cases=(("default", BAYER),), graphed=False):
    """Same short synthetic training with backend 'torch' and 'cuda', per
    (architecture of :data:`STEP_ARCHS`, sensor) case: validation PSNRs,
    ``out[(arch, sensor)][backend]``.  Both train eagerly (autograd,
    ``clip_grad_norm_``, PyTorch's Adam) unless ``graphed``: then the 'cuda'
    side trains as ``kpnt-train --backend cuda`` does, through
    :class:`~kpnt.train.graph_step.GraphedStep` (CUDA graphs, the update
    kernels, steps with a non-finite loss or gradient skipped)."""
    import numpy as np

    from kpnt.train.graph_step import GraphedStep, adam_for_graphs
    from kpnt.train.loss import psnr_linear, smape
    from kpnt.train.synthesis import Batch, CameraModel, synthesize

    xyz_to_srgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    cam = CameraModel("bench", xyz_to_srgb, np.array([[[3e-4] * 3, [2e-6] * 3], [[1e-3] * 3, [1e-5] * 3]]))
    to = lambda b: (b.x.cuda(), b.target.cuda(), b.noise.cuda(), b.valid.cuda())  # noqa: E731
    out = {}
    for arch, sensor in cases:
        cfa = bench_cfa(sensor)
        gen = torch.Generator().manual_seed(seed)
        batches = [to(synthesize(smooth_scenes(8, 96, gen), cfa, [cam], gen)) for _ in range(steps)]
        val = [to(synthesize(smooth_scenes(8, 96, gen), cfa, [cam], gen)) for _ in range(2)]
        res = out[(arch, sensor)] = {}
        for be in ("torch", "cuda"):
            torch.manual_seed(seed)
            m = step_model(arch, sensor, be)
            opt = torch.optim.Adam(m.parameters(), lr=1e-3)

            def validate():
                with torch.no_grad():
                    return torch.cat([psnr_linear(m(x, cfa, nz), t) for x, t, nz, _ in val]).mean().item()

            p0 = validate()
            t0 = time.perf_counter()
            losses = []
            if graphed and be == "cuda":
                opt = adam_for_graphs(m.parameters(), lr=1e-3)
                step = GraphedStep(m, opt, smape, clip=1.0)
                for x, t, nz, v in batches:
                    loss = step(Batch(x=x, target=t, noise=nz, valid=v, cfa=cfa)).result()
                    if loss is not None:           # None: a skipped (non-finite) step
                        losses.append(loss)
            else:
                for x, t, nz, v in batches:
                    opt.zero_grad(set_to_none=True)
                    loss = smape(m(x, cfa, nz), t, v)
                    loss.backward()
                    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                    opt.step()
                    losses.append(loss.item())
            last = losses[-50:]
            res[be] = {"psnr_init": p0, "psnr": validate(), "loss_last50": sum(last) / max(1, len(last)),
                       "steps_applied": len(losses), "s": time.perf_counter() - t0}
            how = " (graphed)" if graphed and be == "cuda" else ""
            print(f"  parity {arch} {sensor} {be}{how}: val PSNR {p0:.3f} -> {res[be]['psnr']:.3f} dB after {steps} "
                  f"steps ({len(losses)} applied), mean loss (last 50) {res[be]['loss_last50']:.5f}, "
                  f"{res[be]['s']:.1f} s", flush=True)
    return out


#: Architectures the training-step table times: DESIGN.md's default, the
#: architecture of the shipped weights (``kpnt/weights``: widths 64, one
#: shared front kernel, the 16 x 64 residual guide on cuDNN; read from the
#: files, so the row follows whatever ships) and the wide one (session 3's
#: shipped architecture, before the guide: colour and front MLPs of width
#: 128, per-channel front kernels, plain normalisation; the split backward).
STEP_ARCHS = {
    "default": {},
    "shipped": "weights",
    "shipped-bf16": "weights",         # the same, kpnt-train --guide-dtype bfloat16
    "wide": dict(width=128, front_width=128, front_kernels="per_channel", apply_mode="plain"),
}


def step_model(arch: str, sensor: str, backend: str, device: str = "cuda"):
    """A fresh model of a STEP_ARCHS entry on ``device`` (the GPU by
    default; initial weights).  '-bf16' entries run the guide in bfloat16 on
    the fused backend only: the reference they are compared with stays
    float32."""
    from kpnt.model import KPNT

    m = KPNT(sensor, step_config(arch, sensor), backend=backend).to(device)
    if arch.endswith("-bf16") and backend != "torch":
        m.guide_train_dtype = torch.bfloat16
    return m


def step_case(arch: str, sensor: str, N: int, H: int, W: int, backend: str = "cuda", device: str = "cuda"):
    """``(model, batch)`` of the profiling tools' training step: a fresh
    :func:`step_model` and the bench's batch (seed 3) in the sensor's first
    CFA phase, on ``device``."""
    return (step_model(arch, sensor, backend, device),
            step_batch(sensor, step_cfas(sensor)[0], N, H, W, seed=3, device=device))


def add_step_case_args(p, sensor: str) -> None:
    """``--arch`` (a STEP_ARCHS entry, default shipped), ``--sensor``
    (default ``sensor``) and ``--size N H W`` (default 4 512 512): the
    training-step case that step_case builds, for the profiling tools."""
    p.add_argument("--arch", default="shipped", choices=list(STEP_ARCHS),
                   help="a STEP_ARCHS entry of tools/kbench_timing.py (default shipped)")
    p.add_argument("--sensor", default=sensor, choices=list(MOSAIC_KINDS), help=f"default {sensor}")
    p.add_argument("--size", type=int, nargs=3, default=[4, 512, 512], metavar=("N", "H", "W"))


def step_config(arch: str, sensor: str):
    """ModelConfig of a STEP_ARCHS entry for ``sensor``."""
    from kpnt.model import ModelConfig
    from kpnt.weights_io import read_metadata, shipped_weights

    spec = STEP_ARCHS[arch]
    if spec == "weights":
        return ModelConfig.from_json(read_metadata(shipped_weights(sensor))["config"])
    return ModelConfig(**spec)


def step_tag(sensor, arch, N=4, H=512, W=512):
    return f"train step {sensor} {arch} {N}x{H}x{W}"


def graph_step_timings(reps, archs=tuple(STEP_ARCHS)):
    """One run, per sensor and architecture: reference eager step, fused
    eager step, fused eager Trainer-like step (finite check with host sync +
    clip), fused graphed step (finite check + clip + masked Adam commit
    inside the graph)."""
    from kpnt.train.graph_step import GraphedStep, adam_for_graphs, eager_step

    rows, res = [], {}
    N, H, W = 4, 512, 512
    for arch in archs:
        for sensor in MOSAIC_KINDS:
            b = step_batch(sensor, step_cfas(sensor)[0], N, H, W, seed=3)
            tag = step_tag(sensor, arch, N, H, W)
            for name, be in (("reference", "torch"), ("fused eager", "cuda")):
                m = step_model(arch, sensor, be)
                res[f"{tag} {name}"] = time_ms(train_step_fn(m, b.x, b.cfa, b.noise, b.target), reps=reps, warmup=2,
                                               batch=3)[0]
                del m
            m = step_model(arch, sensor, "cuda")
            opt = torch.optim.Adam(m.parameters(), lr=1e-5)
            res[f"{tag} fused eager+check+clip"] = time_ms(lambda: eager_step(m, opt, step_loss, 1.0, b), reps=reps,
                                                           warmup=2, batch=3)[0]
            del m, opt
            m = step_model(arch, sensor, "cuda")
            opt = adam_for_graphs(m.parameters(), lr=1e-5)
            t0 = time.perf_counter()
            try:
                gs = GraphedStep(m, opt, step_loss, clip=1.0, example_batch=b)
                torch.cuda.synchronize()
                res[f"{tag} capture s"] = time.perf_counter() - t0
                res[f"{tag} fused graphed"] = time_ms(lambda: gs(b), reps=3 * reps, warmup=3, batch=5)[0]
                del gs
            except Exception:                       # reported, timed as NaN; the checks fail separately
                traceback.print_exc()
                res[f"{tag} capture s"] = res[f"{tag} fused graphed"] = float("nan")
            del m, opt
            torch.cuda.empty_cache()
            for name in ("reference", "fused eager", "fused eager+check+clip", "fused graphed"):
                ms = res[f"{tag} {name}"]
                rows.append((f"{tag} {name}", ms, N * H * W / ms / 1e6))
                print(f"  time {tag} {name:<24s} {ms:8.2f} ms", flush=True)
            print(f"  ({tag}: graph captured in {res[f'{tag} capture s']:.2f} s incl. warm-up)", flush=True)
    return rows, res


def print_graph_table(res, comp=None):
    print("\n== train step 4x512x512 (fwd, SMAPE, bwd, Adam), one run ==")
    print(f"{'sensor':<8s} {'arch':<8s} {'reference':>10s} {'fused eager':>12s} {'eager+chk+clip':>15s} "
          f"{'fused graphed':>14s} {'ref/graphed':>12s} {'eager/graphed':>14s}")
    ratios = {}
    for arch in STEP_ARCHS:
        for sensor in MOSAIC_KINDS:
            k = step_tag(sensor, arch)
            if f"{k} reference" not in res:
                continue
            r, e, c, g = (res[f"{k} {n}"] for n in ("reference", "fused eager", "fused eager+check+clip",
                                                    "fused graphed"))
            print(f"{sensor:<8s} {arch:<8s} {r:10.2f} {e:12.2f} {c:15.2f} {g:14.2f} {r / g:11.2f}x {e / g:13.2f}x")
            ratios[f"train {sensor} {arch}: reference/graphed"] = r / g
            ratios[f"train {sensor} {arch}: fused eager/graphed"] = e / g
            ratios[f"train {sensor} {arch}: reference/fused eager"] = r / e
    key = f"{step_tag('bayer', 'default')} fused graphed"
    if comp and "ms" in comp and key in res:
        ratios["train bayer: compile/graphed"] = comp["ms"] / res[key]
        print(f"torch.compile of the reference (bayer, default), same run: {comp['ms']:.2f} ms "
              f"-> {ratios['train bayer: compile/graphed']:.2f}x")
    return ratios
