"""Build, check and time kpnt's fused CUDA kernels against PyTorch; print a table.

One call does everything a GPU lease should (docs/KERNELS.md, METHOD.md):

1. builds the extension (``kpnt._backend.load``) and reports the build time;
2. measures the device's two ceilings (f16 matrix product, device copy);
3. checks every compiled MLP configuration against a float64 PyTorch MLP on
   fresh random inputs with a pixel count that is not a multiple of the tile:
   forward, weight and input gradients, tiny gradients (f16 underflow),
   grouped weight sets, unwritten outputs (poisoned memory), determinism;
4. checks the fused colour and front levels and the whole model (Bayer,
   X-Trans, odd sizes) against float64 references: outputs, every weight
   set's gradient (against an f16-rounding reference and the exact one);
5. times the colour MLP against eager PyTorch, the grouped front MLP, the
   whole training step (reference vs fused; profile of the fused step) and
   24-MP inference; runs a short training-parity comparison;
6. checks the CUDA-graph-captured step (``kpnt.train.graph_step``) against
   the eager fused step (losses, weights, Adam state, a skipped NaN step,
   one graph per CFA phase) and times reference / fused eager / fused
   graphed training steps for Bayer and X-Trans in one run
   (``--train-steps-only`` runs just this part).

``--inference-only``: the forward-only configurations (the shipped models'
width-128 colour MLP and per-channel front kernels) against float64, the
shipped models (``kpnt/weights``) fused vs float64 and float32 reference on
Bayer and X-Trans mosaics, and 24-MP inference of the shipped models and of
DESIGN.md's default architecture, reference vs fused, in one run.

Separately: ``--compile-step`` times ``torch.compile`` of the reference step
(run it in its own process, it compiles for minutes), ``--sanitize`` runs
small launches of every kernel for ``compute-sanitizer --tool memcheck``.

Usage (GPU machine)::

    PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 python tools/bench_kernels.py --json $OUT/bench.json
    PYTHONUNBUFFERED=1 TORCH_CUDA_ARCH_LIST=9.0 python tools/bench_kernels.py --inference-only --json $OUT/inf.json

Exit status 1 if any check fails.
"""
from __future__ import annotations

import argparse
import functools
import json
import math
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpnt import _backend  # noqa: E402
from kpnt.ops import _cuda  # noqa: E402
from kpnt.testing import TOLERANCES, fused_shapes, mlp_f16_rounded, rel_error as rel  # noqa: E402
from kpnt.mosaic.kinds import BAYER as _BAYER, MOSAIC_KINDS, XTRANS as _XTRANS  # noqa: E402

#: Sensor kinds by the registry's names (kpnt.mosaic.kinds).
BAYER, XTRANS = _BAYER.name, _XTRANS.name

SLOPE = 0.01
COLOUR = [32, 64, 16, 6]
FRONT = [32, 64, 32, 4]
# Tolerances (issue 5): relative Frobenius error against float64.
TOL_FWD = TOLERANCES["forward"]
TOL_GRAD = TOLERANCES["grad"]


# ---------------------------------------------------------------- helpers


def make_weights(dims, groups=None, device="cuda", seed=0):
    """Kaiming-scaled random weights (keeps activations O(1) through the layers)."""
    n_in, hidden, n_out, n_hidden = dims
    g = torch.Generator(device="cpu").manual_seed(seed)
    shapes = [(hidden, n_in)] + [(hidden, hidden)] * (n_hidden - 1) + [(n_out, hidden)]
    lead = () if groups is None else (groups,)
    return [
        (torch.randn(*lead, *s, generator=g) * math.sqrt(2.0 / s[1])).to(device).requires_grad_()
        for s in shapes
    ]


def make_x(P, n_in, device="cuda", seed=1):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(P, n_in, generator=g)
    x[:, -1] = 1.0  # the constant feature that plays the bias role
    return x.to(device)


def torch_mlp(x, ws, slope=SLOPE):
    h = x
    for w in ws[:-1]:
        h = F.leaky_relu(h @ w.t(), slope)
    return h @ ws[-1].t()


def torch_mlp_f16(x, ws, slope=SLOPE):
    """The f16-rounding float64 reference (see :func:`kpnt.testing.mlp_f16_rounded`)."""
    return mlp_f16_rounded(x, ws, slope)


def poison_cache(nbytes=1 << 30):
    """Fill freed allocator blocks with NaN so unwritten outputs show up."""
    t = torch.empty(nbytes // 4, device="cuda")
    t.fill_(float("nan"))
    del t


def time_ms(fn, reps=30, warmup=5, batch=5):
    """Median over `reps` of the CUDA-event time of `batch` back-to-back calls,
    per call (ms), after warm-up.  Batching lets the host enqueue ahead, so
    Python/dispatch overhead only counts where it exceeds the GPU time (as in
    a training loop); a per-call sync would add it to every sample."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(batch):
            fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / batch)
    return statistics.median(times), min(times), max(times)


# ---------------------------------------------------------------- checks


class Checks:
    def __init__(self):
        self.rows = []
        self.failed = 0

    def add(self, name, value, tol, note=""):
        ok = math.isfinite(value) and value <= tol
        self.failed += not ok
        self.rows.append((name, value, tol, "ok" if ok else "FAIL", note))
        print(f"  check {name:<48s} {value:10.3e}  (tol {tol:.0e}) {'ok' if ok else 'FAIL'} {note}", flush=True)

    def flag(self, name, ok, note=""):
        self.failed += not ok
        self.rows.append((name, float(not ok), 0.0, "ok" if ok else "FAIL", note))
        print(f"  check {name:<48s} {'ok' if ok else 'FAIL'} {note}", flush=True)

    def report(self):
        """The closing count of passed checks and every failure again."""
        print(f"\n== checks: {len(self.rows) - self.failed}/{len(self.rows)} ok ==")
        for name, v, tol, st, note in self.rows:
            if st != "ok":
                print(f"FAILED {name}: {v:.3e} (tol {tol:.0e}) {note}")


def check_config(chk: Checks, dims, P, seed):
    tag = "x".join(map(str, dims))
    ws = make_weights(dims, seed=seed)
    x = make_x(P, dims[0], seed=seed + 1)
    gy = torch.randn(P, dims[2], device="cuda", generator=torch.Generator("cuda").manual_seed(seed + 2))
    ws64 = [w.detach().double().requires_grad_() for w in ws]
    x64 = x.double().requires_grad_()
    ref = torch_mlp(x64, ws64)
    ref_grads = torch.autograd.grad(ref, [x64, *ws64], gy.double())
    ref16 = torch_mlp_f16(x64, ws64)
    ref16_grads = torch.autograd.grad(ref16, [x64, *ws64], gy.double())

    poison_cache()
    xg = x.clone().requires_grad_()
    y = _cuda.fused_mlp(xg, ws, SLOPE)
    chk.flag(f"{tag} fwd all rows written", bool(torch.isfinite(y).all()))
    chk.add(f"{tag} fwd rel err vs f64 (P={P})", rel(y, ref), TOL_FWD)
    poison_cache()
    grads = torch.autograd.grad(y, [xg, *ws], gy)
    chk.flag(f"{tag} bwd all rows written", bool(torch.isfinite(grads[0]).all()))
    chk.add(f"{tag} dx rel err vs f16-rounding ref", rel(grads[0], ref16_grads[0]), TOL_GRAD)
    worst = max(rel(g, r) for g, r in zip(grads[1:], ref16_grads[1:]))
    chk.add(f"{tag} dW rel err vs f16-rounding ref", worst, TOL_GRAD, "worst matrix")
    # Against the exact reference: no worse than f16 rounding itself is.
    inherent = max(rel(g, r) for g, r in zip(ref16_grads[1:], ref_grads[1:]))
    worst64 = max(rel(g, r) for g, r in zip(grads[1:], ref_grads[1:]))
    chk.add(f"{tag} dW rel err vs f64 - 1.25 x f16 ref's", worst64 - TOLERANCES["grad_vs_exact_factor"] * inherent,
            TOLERANCES["grad_vs_exact_slack"],
            f"(fused {worst64:.2e}, f16 ref {inherent:.2e})")

    # Determinism: no atomics, fixed reduction order -> bitwise equal reruns.
    y2 = _cuda.fused_mlp(xg, ws, SLOPE)
    grads2 = torch.autograd.grad(y2, [xg, *ws], gy)
    same = torch.equal(y, y2) and all(torch.equal(a, b) for a, b in zip(grads, grads2))
    chk.flag(f"{tag} bitwise-identical reruns", same)

    # Gradients of a mean loss over millions of pixels (~1e-9) underflow f16
    # without the per-tile power-of-two scaling.
    tiny = 1e-9
    grads_t = torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), ws, gy * tiny)
    worst_t = max(rel(g, r * tiny) for g, r in zip(grads_t, ref16_grads[1:]))
    chk.add(f"{tag} dW rel err, dL/dy * 1e-9", worst_t, TOL_GRAD)

    # Tiny batches and tile edges.
    for p in (1, 127, 129):
        xs = x[:p]
        chk.add(f"{tag} fwd rel err (P={p})", rel(_cuda.fused_mlp(xs, ws, SLOPE), ref[:p]), TOL_FWD)

    # Grouped: 3 weight sets, random classes.
    G = 3
    wg = make_weights(dims, groups=G, seed=seed + 5)
    cls = torch.randint(0, G, (P,), device="cuda", generator=torch.Generator("cuda").manual_seed(seed + 6))
    poison_cache()
    yg = _cuda.fused_mlp_grouped(x, cls, wg, SLOPE)
    chk.flag(f"{tag} grouped all rows written", bool(torch.isfinite(yg).all()))
    gg = torch.autograd.grad(yg, wg, gy)
    err_f, err_w = 0.0, 0.0
    for c in range(G):
        idx = (cls == c).nonzero().squeeze(1)
        wc = [w[c].detach().double().requires_grad_() for w in wg]
        rc = torch_mlp(x[idx].double(), wc)
        err_f = max(err_f, rel(yg[idx], rc))
        rc16 = torch_mlp_f16(x[idx].double(), wc)
        rgc = torch.autograd.grad(rc16, wc, gy[idx].double())
        err_w = max(err_w, max(rel(g[c], r) for g, r in zip(gg, rgc)))
    chk.add(f"{tag} grouped G={G} fwd rel err", err_f, TOL_FWD)
    chk.add(f"{tag} grouped G={G} dW rel err", err_w, TOL_GRAD)


# ---------------------------------------------------------------- timing


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


def timings(P, reps, do_compile):
    rows = []
    dims = COLOUR
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

    res = {}
    for name, fn in cases:
        t0 = time.perf_counter()
        ms, lo, hi = time_ms(fn, reps=reps)
        res[name] = ms
        print(f"  time {name:<28s} {ms:8.3f} ms  [{lo:.3f}, {hi:.3f}]  {P / ms / 1e6:6.2f} Gpix/s"
              f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    # Same-version repeat: the spread that any difference must exceed.
    res["fused fwd (repeat)"] = time_ms(fused_f, reps=reps)[0]
    res["fused fwd+bwd (dW) (repeat)"] = time_ms(fused_fb, reps=reps)[0]
    for name, ms in res.items():
        rows.append((name, ms, P / ms / 1e6))
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


# ---------------------------------------------------------------- colour level and whole model


def f16_mlp64(x, ws, slope):
    """:func:`torch_mlp_f16` with the reference MLP's signature (for the model's mlp_fn)."""
    return torch_mlp_f16(x, ws, slope)


def grad_rel(got, want):
    return max(rel(a, b) for a, b in zip(got, want))


def colour_weights(mode, seed):
    """Colour-MLP weights for the checks.  softmax: random (Kaiming), last
    layer x 0.3.  plain: the model's plain-mode initialisation (kernel sums
    ~69, hidden unit 0 carries the constant) with a random last layer on top
    (each tap +-~5): plain normalisation divides by the kernel sum, so random
    weights whose 15 logits sum to ~0 at some pixels make w = k / sum(k)
    arbitrarily ill-conditioned (|sum| is only kept >= PLAIN_EPS = 1e-3), and
    any f16 evaluation of the logits then differs from an f32 one by O(1)
    there (measured: 1.5 relative error of I on random weights)."""
    if mode == "softmax":
        ws = make_weights(COLOUR, seed=seed)
        with torch.no_grad():
            ws[-1].mul_(0.3)
        return ws
    from kpnt.model import KPNT, ModelConfig

    ws = [w.detach().clone() for w in KPNT("rgb", ModelConfig(apply_mode="plain")).weight_sets()["colour"]]
    g = torch.Generator().manual_seed(seed)
    ws[-1][:, 1:] += torch.randn(ws[-1].shape[0], ws[-1].shape[1] - 1, generator=g) * 0.5
    return [w.cuda().requires_grad_() for w in ws]


def check_colour_level(chk: Checks):
    """Fused colour level vs kpnt.ref.colour_level.colour_level (float64), odd sizes,
    tiny pyramid levels, both apply modes, with and without the noise input."""
    from kpnt.ref.colour_level import colour_level as ref_level
    from kpnt.spec import ColourLevelSpec

    cases = [((2, 3, 203, 157), "softmax", True), ((1, 3, 1, 3), "softmax", True), ((1, 3, 2, 2), "plain", True),
             ((3, 3, 61, 130), "plain", False), ((4, 3, 129, 131), "softmax", False)]
    for i, (shape, mode, nz) in enumerate(cases):
        tag = f"colour level {'x'.join(map(str, shape))} {mode}{'' if nz else ' no-noise'}"
        g = torch.Generator("cuda").manual_seed(200 + i)
        D = torch.randn(*shape, device="cuda", generator=g) * 0.03
        var = torch.rand(*shape, device="cuda", generator=g) * 4e-4 + 1e-5
        ws = colour_weights(mode, seed=300 + i)
        spec = ColourLevelSpec(width=COLOUR[1], hidden_layers=COLOUR[3], leaky_slope=SLOPE, apply_mode=mode,
                               noise_input=nz)
        gI = torch.randn(*shape, device="cuda", generator=g)
        ga = torch.randn(shape[0], 1, *shape[2:], device="cuda", generator=g)
        ws64 = [w.detach().double().requires_grad_() for w in ws]
        ref = ref_level(D.double(), var.double(), ws64, spec)
        ref_g = torch.autograd.grad(ref, ws64, [gI.double(), ga.double()])
        ref16 = ref_level(D.double(), var.double(), ws64, spec, mlp_fn=f16_mlp64)
        ref16_g = torch.autograd.grad(ref16, ws64, [gI.double(), ga.double()])
        poison_cache()
        I, a = _cuda.fused_colour_level(D, var, ws, spec)
        chk.flag(f"{tag} all written", bool(torch.isfinite(I).all() and torch.isfinite(a).all()))
        chk.add(f"{tag} I rel err vs f64", rel(I, ref[0]), TOL_FWD)
        chk.add(f"{tag} a rel err vs f64", rel(a, ref[1]), TOL_FWD)
        poison_cache()
        gw = torch.autograd.grad((I, a), ws, [gI, ga])
        chk.add(f"{tag} dW vs f16-rounding ref", grad_rel(gw, ref16_g), TOL_GRAD, "worst matrix")
        inherent = grad_rel(ref16_g, ref_g)
        exact = grad_rel(gw, ref_g)
        chk.add(f"{tag} dW vs f64 - 1.25 x f16 ref's", exact - TOLERANCES["grad_vs_exact_factor"] * inherent,
                TOLERANCES["grad_vs_exact_slack"],
                f"(fused {exact:.2e}, f16 ref {inherent:.2e})")
        if i == 0:
            gw2 = torch.autograd.grad(_cuda.fused_colour_level(D, var, ws, spec), ws, [gI, ga])
            chk.flag(f"{tag} bitwise-identical rerun", all(torch.equal(x, y) for x, y in zip(gw, gw2)))
            # the D/var gradient path (reference level around the fused MLP)
            Dq, vq = D.clone().requires_grad_(), var.clone().requires_grad_()
            got = torch.autograd.grad(_cuda.fused_colour_level(Dq, vq, ws, spec), [Dq, vq], [gI, ga])
            Dr, vr = D.double().requires_grad_(), var.double().requires_grad_()
            want = torch.autograd.grad(ref_level(Dr, vr, ws64, spec), [Dr, vr], [gI.double(), ga.double()])
            want16 = torch.autograd.grad(ref_level(Dr, vr, ws64, spec, mlp_fn=f16_mlp64), [Dr, vr],
                                         [gI.double(), ga.double()])
            for j, nm in enumerate(("dD", "dvar")):
                chk.add(f"{tag} {nm} vs f16-rounding ref", rel(got[j], want16[j]), TOL_GRAD,
                        f"(vs exact f64 {rel(got[j], want[j]):.2e}; f16 ref vs exact {rel(want16[j], want[j]):.2e})")


def front_weights(sensor, mode, seed):
    """Front-MLP weight sets for the checks: random (Kaiming, last layer x 0.3)
    for softmax; for plain the model's plain start plus a random last layer
    (see colour_weights: random plain kernels are ill-conditioned)."""
    from kpnt.model import KPNT, ModelConfig

    n = bench_cfa(sensor).n_classes
    if mode == "softmax":
        sets = []
        for k in range(n):
            ws = make_weights(FRONT, seed=seed + k)
            with torch.no_grad():
                ws[-1].mul_(0.3)
            sets.append(ws)
        return sets
    m = KPNT(sensor, ModelConfig(apply_mode="plain"))
    g = torch.Generator().manual_seed(seed)
    sets = []
    for name, ws in m.weight_sets().items():
        if name == "colour":
            continue
        ws = [w.detach().clone() for w in ws]
        ws[-1][:, 1:] += torch.randn(ws[-1].shape[0], ws[-1].shape[1] - 1, generator=g) * 0.3
        sets.append([w.cuda().requires_grad_() for w in ws])
    return sets


def check_front_level(chk: Checks):
    """Fused front level vs kpnt.ref.front_level.front_level (float64): output,
    dU, every class's weight gradient; Bayer and X-Trans, odd sizes."""
    from kpnt.ref.front_level import front_level as ref_front
    from kpnt.spec import FrontLevelSpec

    cases = [(BAYER, (2, 203, 317), "softmax", True), (XTRANS, (1, 211, 299), "softmax", True),
             (XTRANS, (2, 37, 41), "plain", False), (BAYER, (1, 5, 7), "plain", True)]
    for i, (sensor, (N, H, W), mode, nz) in enumerate(cases):
        tag = f"front {sensor} {N}x{H}x{W} {mode}{'' if nz else ' no-noise'}"
        x, cfa, noise, base = model_inputs(sensor, N, H, W, seed=400 + i)
        g = torch.Generator("cuda").manual_seed(500 + i)
        U = (base + torch.randn(base.shape, device="cuda", generator=g) * 0.01).requires_grad_()
        S = base
        sets = front_weights(sensor, mode, seed=600 + 10 * i)
        spec = FrontLevelSpec(radius=2, width=FRONT[1], hidden_layers=FRONT[3], leaky_slope=SLOPE, apply_mode=mode,
                              noise_input=nz)
        flat = [w for ws in sets for w in ws]
        gO = torch.randn(N, 3, H, W, device="cuda", generator=g)
        U64 = U.detach().double().requires_grad_()
        sets64 = [[w.detach().double().requires_grad_() for w in ws] for ws in sets]
        flat64 = [w for ws in sets64 for w in ws]
        args64 = (x.double(), U64, S.double(), noise.double(), cfa, sets64, spec)
        ref = ref_front(*args64)
        ref_g = torch.autograd.grad(ref, [U64, *flat64], gO.double())
        ref16 = ref_front(*args64, mlp_fn=f16_mlp64)
        ref16_g = torch.autograd.grad(ref16, [U64, *flat64], gO.double())
        poison_cache()
        O = _cuda.fused_front_level(x, U, S, noise, cfa, sets, spec)
        chk.flag(f"{tag} all written", bool(torch.isfinite(O).all()))
        chk.add(f"{tag} O rel err vs f64", rel(O, ref), TOL_FWD)
        chk.add(f"{tag} O - U rel err vs f64", rel(O - U, ref - U64), TOL_FWD, "(the level's own contribution)")
        poison_cache()
        got = torch.autograd.grad(O, [U, *flat], gO)
        chk.flag(f"{tag} grads finite", all(bool(torch.isfinite(t).all()) for t in got))
        chk.add(f"{tag} dU vs f16-rounding ref", rel(got[0], ref16_g[0]), TOL_GRAD,
                f"(vs exact f64 {rel(got[0], ref_g[0]):.2e})")
        nm = len(sets[0])
        for k, name in enumerate(cfa.class_names):
            sl = slice(1 + k * nm, 1 + (k + 1) * nm)
            e16 = grad_rel(got[sl], ref16_g[sl])
            e64, inh = grad_rel(got[sl], ref_g[sl]), grad_rel(ref16_g[sl], ref_g[sl])
            chk.add(f"{tag} dW '{name}' vs f16-rounding ref", e16, TOL_GRAD,
                    f"(vs exact f64 {e64:.2e}; f16 ref vs exact {inh:.2e})")
        if i == 0:
            got2 = torch.autograd.grad(_cuda.fused_front_level(x, U, S, noise, cfa, sets, spec),
                                       [U, *flat], gO)
            chk.flag(f"{tag} bitwise-identical rerun", all(torch.equal(a, b) for a, b in zip(got, got2)))


def bench_cfa(sensor):
    """The reference phase of a sensor kind (kpnt.mosaic.cfa.reference_cfa)."""
    from kpnt.mosaic.cfa import reference_cfa

    return reference_cfa(sensor)


def model_inputs(sensor, N, H, W, seed):
    g = torch.Generator("cuda").manual_seed(seed)
    # smooth-ish content plus noise (pure noise would make every detail level white)
    base = F.interpolate(torch.rand(N, 3, H // 16 + 2, W // 16 + 2, device="cuda", generator=g), size=(H, W),
                         mode="bilinear", align_corners=False) * 0.6
    cfa = bench_cfa(sensor)
    col = torch.from_numpy(cfa.colour_map(H, W)).to("cuda").long().expand(N, 1, H, W)
    x = base.gather(1, col) + torch.randn(N, 1, H, W, device="cuda", generator=g) * 0.02
    noise = torch.tensor([[2e-3] * 3, [1e-5] * 3], device="cuda").expand(N, 2, 3).contiguous()
    return x, cfa, noise, base


def smape_loss(out, target):
    return ((out - target).abs() / (out.abs() + target.abs() + 1e-3)).mean()


def check_model(chk: Checks):
    """Whole model, fused backend vs reference: output and every weight set's
    gradient (Bayer and X-Trans, sizes that are multiples of nothing)."""
    from kpnt.model import KPNT
    from kpnt.ops import dispatch

    for sensor, (N, H, W) in ((BAYER, (2, 203, 317)), (XTRANS, (2, 211, 299))):
        x, cfa, noise, target = model_inputs(sensor, N, H, W, seed=7)
        res = {}
        for name, be, dt in (("fused", "cuda", torch.float32), ("f64", "torch", torch.float64),
                             ("f64-f16mlp", "torch", torch.float64)):
            m = KPNT(sensor, backend=be).cuda().to(dt)
            saved = dispatch._registered["torch"]
            if name == "f64-f16mlp":
                dispatch._registered["torch"] = {**saved, "mlp": f16_mlp64}
                dispatch._registered["torch"]["colour_level"] = functools.partial(
                    saved["colour_level"], mlp_fn=f16_mlp64)
                dispatch._registered["torch"]["front_level"] = functools.partial(
                    saved["front_level"], mlp_fn=f16_mlp64)
            try:
                out = m(x.to(dt), cfa, noise.to(dt))
                sets = m.weight_sets()
                grads = {k: torch.autograd.grad(smape_loss(out, target.to(dt)), v, retain_graph=True)
                         for k, v in sets.items()}
            finally:
                dispatch._registered["torch"] = saved
            res[name] = (out.detach(), grads)
        chk.add(f"model {sensor} {N}x{H}x{W} output rel err vs f64", rel(res["fused"][0], res["f64"][0]), TOL_FWD)
        for k in res["fused"][1]:
            cat = lambda gs: torch.cat([g.reshape(-1) for g in gs])
            e16 = rel(cat(res["fused"][1][k]), cat(res["f64-f16mlp"][1][k]))
            e64 = rel(cat(res["fused"][1][k]), cat(res["f64"][1][k]))
            inh = rel(cat(res["f64-f16mlp"][1][k]), cat(res["f64"][1][k]))
            chk.add(f"model {sensor} grad '{k}' vs f16-rounding ref", e16, TOL_GRAD,
                    f"(vs exact f64 {e64:.2e}; f16 ref vs exact {inh:.2e})")


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
    torch.cuda.synchronize()
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            step()
        torch.cuda.synchronize()
    ka = prof.key_averages()
    dev_attr = "device_time_total" if hasattr(ka[0], "device_time_total") else "cuda_time_total"
    kernels = sorted((e for e in ka if getattr(e, dev_attr, 0) > 0 and e.device_type.name != "CPU"),
                     key=lambda e: -getattr(e, dev_attr))
    gpu_ms = sum(getattr(e, dev_attr) for e in kernels) / 1e3 / 3
    n_launch = sum(e.count for e in kernels) / 3
    print(f"  profile fused train step bayer: GPU kernel time {gpu_ms:.2f} ms/step, {n_launch:.0f} kernels/step", flush=True)
    for e in kernels[:14]:
        print(f"    {getattr(e, dev_attr) / 1e3 / 3:7.3f} ms  x{e.count / 3:5.0f}  {e.key[:90]}", flush=True)
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
    return rows, res


def check_forward_only(chk: Checks, P: int):
    """Forward-only MLP shapes: forward vs float64 (odd P, tile edges,
    grouped), and a clear error when gradients are asked for."""
    from kpnt.ops import capability

    # the loaded extension's table (kernels/shapes.def lines marked train 0)
    forward_only = sorted({s.mlp.as_tuple() for s in capability.shapes() if not s.train})
    for i, dims in enumerate(forward_only):
        tag = "x".join(map(str, dims))
        ws = make_weights(list(dims), seed=500 + i)
        x = make_x(P, dims[0], seed=501 + i)
        ref = torch_mlp(x.double(), [w.detach().double() for w in ws])
        poison_cache()
        with torch.no_grad():
            y = _cuda.fused_mlp(x, ws, SLOPE)
        chk.flag(f"{tag} fwd all rows written", bool(torch.isfinite(y).all()))
        chk.add(f"{tag} fwd rel err vs f64 (P={P})", rel(y, ref), TOL_FWD)
        for p in (1, 255, 257):
            with torch.no_grad():
                chk.add(f"{tag} fwd rel err (P={p})", rel(_cuda.fused_mlp(x[:p], ws, SLOPE), ref[:p]), TOL_FWD)
        G = 3
        wg = make_weights(list(dims), groups=G, seed=502 + i)
        cls = torch.randint(0, G, (P,), device="cuda", generator=torch.Generator("cuda").manual_seed(503 + i))
        with torch.no_grad():
            yg = _cuda.fused_mlp_grouped(x, cls, wg, SLOPE)
        err = 0.0
        for c in range(G):
            idx = (cls == c).nonzero().squeeze(1)
            err = max(err, rel(yg[idx], torch_mlp(x[idx].double(), [w[c].detach().double() for w in wg])))
        chk.add(f"{tag} grouped G={G} fwd rel err", err, TOL_FWD)
        try:
            torch.autograd.grad(_cuda.fused_mlp(x[:300], ws, SLOPE).sum(), ws)
            chk.flag(f"{tag} backward refused (forward only)", False, "no error")
        except ValueError as e:
            chk.flag(f"{tag} backward refused (forward only)", "forward only" in str(e))


def shipped_model(sensor):
    from kpnt.weights_io import load_weights

    path = Path(__file__).resolve().parent.parent / "kpnt" / "weights" / f"{sensor}.safetensors"
    return load_weights(path, sensor=sensor)[0].eval()


def check_shipped_models(chk: Checks):
    """The shipped models (forward-only fused shapes) fused vs float64 and
    float32 reference, Bayer and X-Trans, odd sizes, several phases."""
    from kpnt.mosaic.cfa import CFA

    for sensor, cfa, (N, H, W) in ((BAYER, CFA.bayer("RGGB"), (2, 203, 317)),
                                   (BAYER, CFA.bayer("GBRG"), (1, 160, 96)),
                                   (XTRANS, CFA.xtrans(), (2, 211, 299)),
                                   (XTRANS, CFA.xtrans(3, 1), (1, 96, 132))):
        x, _, noise, _ = model_inputs(sensor, N, H, W, seed=11)
        m = shipped_model(sensor).cuda()
        with torch.inference_mode():
            m.backend = "cuda"
            fused = m(x, cfa, noise)
            m.backend = "torch"
            ref32 = m(x, cfa, noise)
            ref64 = m.double()(x.double(), cfa, noise.double())
        tag = f"shipped {sensor} {cfa.name} {N}x{H}x{W}"
        chk.flag(f"{tag} fused output finite", bool(torch.isfinite(fused).all()))
        chk.add(f"{tag} fused rel err vs f64", rel(fused, ref64), TOL_FWD,
                f"(f32 reference vs f64 {rel(ref32, ref64):.1e})")
        del m


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


def inference_only(args, props, commit, build_s) -> int:
    chk = Checks()
    t0 = time.perf_counter()
    # every shape of kernels/shapes.def compiled with a backward
    for i, dims in enumerate(sorted({s.mlp.as_tuple() for s in fused_shapes(train=True)})):
        dims = list(dims)
        check_config(chk, dims, args.check_pixels, seed=100 * i)
    check_forward_only(chk, args.check_pixels)
    check_shipped_models(chk)
    print(f"checks took {time.perf_counter() - t0:.1f} s", flush=True)
    rows, res = inference_timings(reps=5)
    print(f"\n== 24-MP inference (6000 x 4000 mosaic, inference_mode, CUDA events, median of 5) ==")
    print(f"{'sensor':<8s} {'architecture':<10s} {'reference ms':>13s} {'fused ms':>9s} {'ratio':>7s}")
    ratios = {}
    for sensor in MOSAIC_KINDS:
        for arch in ("shipped", "default"):
            r, f = res[f"inference {sensor} 24 MP {arch} torch"], res[f"inference {sensor} 24 MP {arch} cuda"]
            ratios[f"{sensor} {arch}: reference/fused"] = r / f
            print(f"{sensor:<8s} {arch:<10s} {r:13.1f} {f:9.1f} {r / f:6.1f}x")
    chk.report()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit,
            "build_s": build_s, "checks": chk.rows, "timings": rows, "ratios": ratios}, indent=1))
    return 1 if chk.failed else 0


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


def sanitize_case():
    """Small launches of every kernel, for compute-sanitizer."""
    from kpnt.model import KPNT
    from kpnt.spec import ColourLevelSpec

    ws = make_weights(COLOUR, seed=1)
    for shape in ((2, 3, 19, 23), (1, 3, 1, 2)):
        D = torch.randn(*shape, device="cuda") * 0.03
        var = torch.rand(*shape, device="cuda") * 1e-3 + 1e-5
        for mode in ("softmax", "plain"):
            I, a = _cuda.fused_colour_level(D, var, ws, ColourLevelSpec(leaky_slope=SLOPE, apply_mode=mode))
            torch.autograd.grad((I, a), ws, [torch.randn_like(I), torch.randn_like(a)])
    x = make_x(301, 32)
    wf = make_weights(FRONT, seed=2)
    torch.autograd.grad(_cuda.fused_mlp(x, wf, SLOPE).square().sum(), wf)
    wg = make_weights(FRONT, groups=3, seed=3)
    cls = torch.randint(0, 3, (301,), device="cuda")
    torch.autograd.grad(_cuda.fused_mlp_grouped(x, cls, wg, SLOPE).square().sum(), wg)
    for sensor in MOSAIC_KINDS:
        xm, cfa, noise, target = model_inputs(sensor, 1, 37, 41, seed=5)
        m = KPNT(sensor, backend="cuda").cuda()
        smape_loss(m(xm, cfa, noise), target).backward()
    torch.cuda.synchronize()
    print("sanitize case done", flush=True)


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


def parity_run(steps, seed=0):
    """Same short synthetic training with backend 'torch' and 'cuda': validation PSNRs."""
    import numpy as np

    from kpnt.model import KPNT
    from kpnt.train.loss import psnr_linear, smape
    from kpnt.train.synthesis import CameraModel, synthesize

    xyz_to_srgb = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])
    cam = CameraModel("bench", xyz_to_srgb, np.array([[[3e-4] * 3, [2e-6] * 3], [[1e-3] * 3, [1e-5] * 3]]))
    cfa = bench_cfa(BAYER)
    gen = torch.Generator().manual_seed(seed)
    batches = [synthesize(smooth_scenes(8, 96, gen), cfa, [cam], gen) for _ in range(steps)]
    val = [synthesize(smooth_scenes(8, 96, gen), cfa, [cam], gen) for _ in range(2)]
    to = lambda b: (b.x.cuda(), b.target.cuda(), b.noise.cuda(), b.valid.cuda())
    batches = [to(b) for b in batches]
    val = [to(b) for b in val]
    out = {}
    for be in ("torch", "cuda"):
        torch.manual_seed(seed)
        m = KPNT(BAYER, backend=be).cuda()
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)

        def validate():
            with torch.no_grad():
                return torch.cat([psnr_linear(m(x, cfa, nz), t) for x, t, nz, _ in val]).mean().item()

        p0 = validate()
        t0 = time.perf_counter()
        losses = []
        for x, t, nz, v in batches:
            opt.zero_grad(set_to_none=True)
            loss = smape(m(x, cfa, nz), t, v)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        out[be] = {"psnr_init": p0, "psnr": validate(), "loss_last50": sum(losses[-50:]) / 50,
                   "s": time.perf_counter() - t0}
        print(f"  parity {be}: val PSNR {p0:.3f} -> {out[be]['psnr']:.3f} dB after {steps} steps, "
              f"mean loss (last 50) {out[be]['loss_last50']:.5f}, {out[be]['s']:.1f} s", flush=True)
    return out


# ---------------------------------------------------------------- CUDA-graph-captured train step


def step_batch(sensor, cfa, N, H, W, seed, nan_target=False):
    """A training batch (kpnt.train.synthesis.Batch) on the GPU: smooth scene
    sampled through ``cfa`` plus noise; optionally one NaN target pixel
    (a step the trainer must skip)."""
    from kpnt.train.synthesis import Batch

    g = torch.Generator("cuda").manual_seed(seed)
    base = F.interpolate(torch.rand(N, 3, H // 16 + 2, W // 16 + 2, device="cuda", generator=g), size=(H, W),
                         mode="bilinear", align_corners=False) * 0.6
    col = torch.from_numpy(cfa.colour_map(H, W)).to("cuda").long().expand(N, 1, H, W)
    x = base.gather(1, col) + torch.randn(N, 1, H, W, device="cuda", generator=g) * 0.02
    noise = torch.tensor([[2e-3] * 3, [1e-5] * 3], device="cuda").expand(N, 2, 3).contiguous()
    target = base.clone()
    if nan_target:
        target[0, 1, H // 2, W // 3] = float("nan")
    valid = torch.ones(N, 1, H, W, dtype=torch.bool, device="cuda")
    return Batch(x=x, target=target, noise=noise, valid=valid, cfa=cfa)


def step_cfas(sensor):
    from kpnt.mosaic.cfa import CFA

    return (CFA.bayer("RGGB"), CFA.bayer("GBRG")) if sensor == BAYER else (CFA.xtrans(), CFA.xtrans(1, 2))


def step_loss(out, target, valid):
    """The timed steps' loss (``smape_loss``; ``valid`` is all True here)."""
    return smape_loss(out, target)


def check_graph_step(chk: Checks, steps=6):
    """GraphedStep vs the eager fused step (eager_step: the Trainer's step for
    one shard): same losses, same weights and Adam moments after ``steps``
    steps over two CFA phases (two graphs), one of them a NaN step that both
    must skip (graphed: weights and Adam state bitwise unchanged)."""
    from kpnt.model import KPNT
    from kpnt.train.graph_step import GraphedStep, eager_step

    for sensor, (N, H, W) in ((BAYER, (2, 160, 224)), (XTRANS, (2, 168, 228))):
        me = KPNT(sensor, backend="cuda").cuda()
        mg = KPNT(sensor, backend="cuda").cuda()
        oe = torch.optim.Adam(me.parameters(), lr=1e-3)
        og = torch.optim.Adam(mg.parameters(), lr=1e-3, capturable=True)
        gs = GraphedStep(mg, og, step_loss, clip=1.0)
        cfas = step_cfas(sensor)
        dloss, skip_ok, bitwise = 0.0, True, True
        for k in range(steps):
            b = step_batch(sensor, cfas[k % 2], N, H, W, seed=50 + k, nan_target=(k == 3))
            le = eager_step(me, oe, step_loss, 1.0, b)
            before = [p.detach().clone() for p in mg.parameters()] + [
                v.clone() for p in mg.parameters() for v in og.state[p].values()] if k == 3 else None
            lg = gs(b).result()
            if k == 3:
                after = [p.detach() for p in mg.parameters()] + [v for p in mg.parameters() for v in og.state[p].values()]
                bitwise = all(torch.equal(a, c) for a, c in zip(before, after))
                skip_ok = le is None and lg is None
            elif le is None or lg is None:
                skip_ok = False
            else:
                dloss = max(dloss, abs(lg - le) / abs(le))
        dw = max(rel(pg.detach(), pe.detach()) for pg, pe in zip(mg.parameters(), me.parameters()))
        dm = max(rel(og.state[pg]["exp_avg"], oe.state[pe]["exp_avg"]) for pg, pe in zip(mg.parameters(), me.parameters()))
        steps_g = int(og.state[next(mg.parameters())]["step"].item())
        chk.add(f"graphed step {sensor} loss vs eager ({steps} steps)", dloss, 1e-5)
        chk.add(f"graphed step {sensor} weights vs eager (worst matrix)", dw, 1e-3)
        chk.add(f"graphed step {sensor} Adam exp_avg vs eager", dm, 1e-3)
        chk.flag(f"graphed step {sensor} NaN step skipped by both", skip_ok)
        chk.flag(f"graphed step {sensor} skipped step: weights+Adam bitwise kept", bitwise)
        chk.flag(f"graphed step {sensor} Adam step count {steps_g} == {steps - 1}", steps_g == steps - 1)
        chk.flag(f"graphed step {sensor} one graph per CFA phase", gs.graphs == 2, f"({gs.graphs} graphs)")
        del me, mg, oe, og, gs
        torch.cuda.empty_cache()


def graph_step_timings(reps):
    """One run, per sensor: reference eager step, fused eager step, fused eager
    Trainer-like step (finite check with host sync + clip), fused graphed step
    (finite check + clip + masked Adam commit inside the graph)."""
    from kpnt.model import KPNT
    from kpnt.train.graph_step import GraphedStep, eager_step

    rows, res = [], {}
    N, H, W = 4, 512, 512
    for sensor in MOSAIC_KINDS:
        b = step_batch(sensor, step_cfas(sensor)[0], N, H, W, seed=3)
        tag = f"train step {sensor} {N}x{H}x{W}"
        for name, be in (("reference", "torch"), ("fused eager", "cuda")):
            m = KPNT(sensor, backend=be).cuda()
            res[f"{tag} {name}"] = time_ms(train_step_fn(m, b.x, b.cfa, b.noise, b.target), reps=reps, warmup=2,
                                           batch=3)[0]
            del m
        m = KPNT(sensor, backend="cuda").cuda()
        opt = torch.optim.Adam(m.parameters(), lr=1e-5)
        res[f"{tag} fused eager+check+clip"] = time_ms(lambda: eager_step(m, opt, step_loss, 1.0, b), reps=reps,
                                                       warmup=2, batch=3)[0]
        del m, opt
        m = KPNT(sensor, backend="cuda").cuda()
        opt = torch.optim.Adam(m.parameters(), lr=1e-5, capturable=True)
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
    print(f"{'sensor':<8s} {'reference':>10s} {'fused eager':>12s} {'eager+chk+clip':>15s} {'fused graphed':>14s} "
          f"{'ref/graphed':>12s} {'eager/graphed':>14s}")
    ratios = {}
    for sensor in MOSAIC_KINDS:
        k = f"train step {sensor} 4x512x512"
        r, e, c, g = (res[f"{k} {n}"] for n in ("reference", "fused eager", "fused eager+check+clip", "fused graphed"))
        print(f"{sensor:<8s} {r:10.2f} {e:12.2f} {c:15.2f} {g:14.2f} {r / g:11.2f}x {e / g:13.2f}x")
        ratios[f"train {sensor}: reference/graphed"] = r / g
        ratios[f"train {sensor}: fused eager/graphed"] = e / g
        ratios[f"train {sensor}: reference/fused eager"] = r / e
    if comp and "ms" in comp:
        ratios["train bayer: compile/graphed"] = comp["ms"] / res["train step bayer 4x512x512 fused graphed"]
        print(f"torch.compile of the reference (bayer), same run: {comp['ms']:.2f} ms "
              f"-> {ratios['train bayer: compile/graphed']:.2f}x")
    return ratios



# ---------------------------------------------------------------- main


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pixels", type=int, default=1 << 22, help="pixels per timed MLP call (default 2^22)")
    ap.add_argument("--check-pixels", type=int, default=100_003, help="pixels per MLP correctness check")
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile training step")
    ap.add_argument("--mlp-compile", action="store_true", help="also time torch.compile of the bare MLP")
    ap.add_argument("--compile-timeout", type=int, default=240, help="seconds for the compiled training step")
    ap.add_argument("--no-model", action="store_true", help="skip the whole-model checks and timings")
    ap.add_argument("--parity-steps", type=int, default=300, help="training-parity steps per backend (0: skip)")
    ap.add_argument("--json", type=Path, help="write all numbers here")
    ap.add_argument("--compile-step", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--sanitize", action="store_true", help="run small launches of every kernel (compute-sanitizer)")
    ap.add_argument("--inference-only", action="store_true",
                    help="only the forward-only configurations, the shipped models' checks and 24-MP inference timings")
    ap.add_argument("--train-steps-only", action="store_true",
                    help="only the training-step section: graphed-step checks and the timings of the reference, "
                         "fused eager and CUDA-graph-captured fused steps")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("bench_kernels: needs a CUDA GPU", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    if args.compile_step:
        compile_step_timing(reps=10)
        return 0
    if args.sanitize:
        sanitize_case()
        return 0
    props = torch.cuda.get_device_properties(0)
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    except OSError:
        commit = "?"
    print(f"device {props.name} ({props.multi_processor_count} SMs), torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}, python {platform.python_version()}, commit {commit}", flush=True)

    t0 = time.perf_counter()
    ext = _backend.load()
    build_s = time.perf_counter() - t0
    print(f"build/load {build_s:.1f} s; configs {ext.mlp_supported_configs()}", flush=True)
    from kpnt.ops import dispatch

    if args.train_steps_only:
        return train_steps_only(args, props, commit, build_s)
    if args.inference_only:
        return inference_only(args, props, commit, build_s)
    chk = Checks()
    t0 = time.perf_counter()
    chk.flag("kpnt.ops 'cuda' backend loads, fuses colour_level",
             "colour_level" in dispatch._backend_ops("cuda") and dispatch.resolve_backend("auto", torch.device("cuda")) == "cuda")

    tflops, tbs = ceilings()
    print(f"ceilings: f16 matmul {tflops:.0f} TFLOP/s, device copy {tbs:.2f} TB/s", flush=True)

    for i, dims in enumerate((COLOUR, FRONT)):
        check_config(chk, dims, args.check_pixels, seed=100 * i)
    check_colour_level(chk)
    check_front_level(chk)
    if not args.no_model:
        check_model(chk)
    print(f"checks took {time.perf_counter() - t0:.1f} s", flush=True)

    rows, res = timings(args.pixels, args.reps, args.mlp_compile)
    grows, gP = grouped_timings(args.pixels, args.reps)
    mrows, mres, comp, parity = [], {}, None, None
    if not args.no_model:
        mrows, mres = model_timings(reps=10)
        if not args.no_compile:
            t0 = time.perf_counter()
            try:
                r = subprocess.run([sys.executable, __file__, "--compile-step"], capture_output=True, text=True,
                                   timeout=args.compile_timeout)
                lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
                if r.returncode == 0 and lines:
                    comp = json.loads(lines[-1])
                    print(f"  time train step bayer compile (reference) {comp['ms']:8.2f} ms "
                          f"(compiled in {comp['compile_s']:.0f} s)", flush=True)
                else:
                    tail = (r.stderr.strip().splitlines() or ["?"])[-1]
                    comp = {"error": f"exit {r.returncode}: {tail}"}
                    print(f"  torch.compile of the reference step failed: {comp['error']}", flush=True)
            except subprocess.TimeoutExpired:
                comp = {"error": f"not compiled within {args.compile_timeout} s"}
                print(f"  torch.compile of the reference step: {comp['error']}", flush=True)
            print(f"  (compile subprocess {time.perf_counter() - t0:.0f} s)", flush=True)
        if args.parity_steps:
            parity = parity_run(args.parity_steps)
        check_graph_step(chk)
        grows_, gres = graph_step_timings(reps=10)
        mrows += grows_
        mres.update(gres)

    fwd_f, bwd_f = flops_per_pixel(COLOUR)
    P = args.pixels
    print(f"\n== MLP timings, P = {P} (colour), {gP} (front) ==")
    print(f"{'case':<40s} {'ms':>9s} {'Gpix/s':>8s} {'TFLOP/s':>8s}")
    for name, ms, gp in rows + grows:
        fl = ""
        if name.startswith("fused fwd+bwd (dW)"):
            fl = f"{(fwd_f + bwd_f) * gp * 1e9 / 1e12:8.1f}"
        elif name.startswith("fused fwd"):
            fl = f"{fwd_f * gp * 1e9 / 1e12:8.1f}"
        print(f"{name:<40s} {ms:9.3f} {gp:8.2f} {fl:>8s}")
    ratios = {}
    for base in ("eager f32", "eager f16", "compile f16"):
        for kind, fused in (("fwd", "fused fwd"), ("fwd+bwd", "fused fwd+bwd (dW)")):
            key = f"{base} {kind}"
            if key in res:
                ratios[f"fused/{key}"] = res[key] / res[fused]
    if mres:
        print("\n== whole model (Adam step incl.) ==")
        for name, ms, _ in mrows:
            print(f"{name:<40s} {ms:9.2f} ms")
        for sensor in MOSAIC_KINDS:
            k = f"train step {sensor} 4x512x512"
            ratios[f"train {sensor}: reference/fused"] = mres[f"{k} torch"] / mres[f"{k} cuda"]
        if comp and "ms" in comp:
            print(f"{'train step bayer 4x512x512 compile':<40s} {comp['ms']:9.2f} ms")
            ratios["train bayer: compile/fused"] = comp["ms"] / mres["train step bayer 4x512x512 cuda"]
        ratios.update(print_graph_table(mres, comp))
        if "inference bayer 24 MP cuda" in mres and "inference bayer 24 MP torch" in mres:
            ratios["24MP: reference/fused"] = mres["inference bayer 24 MP torch"] / mres["inference bayer 24 MP cuda"]
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    if parity:
        d = parity["cuda"]["psnr"] - parity["torch"]["psnr"]
        print(f"parity: val PSNR torch {parity['torch']['psnr']:.3f} dB, cuda {parity['cuda']['psnr']:.3f} dB "
              f"(diff {d:+.3f} dB)")
        chk.add("training parity |dPSNR| (dB)", abs(d), 0.1)
    try:
        _cuda.fused_mlp(make_x(10, 32), make_weights([32, 48, 16, 2]), SLOPE)
        chk.flag("unsupported config raises ValueError", False, "no error")
    except ValueError as e:
        chk.flag("unsupported config raises ValueError", "compiled configurations" in str(e))
    chk.report()

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit,
            "build_s": build_s, "ceilings": {"f16_tflops": tflops, "copy_tbs": tbs},
            "checks": chk.rows, "timings": rows + grows + mrows, "ratios": ratios, "pixels": P,
            "compile_step": comp, "parity": parity,
        }, indent=1))
    return 1 if chk.failed else 0


def train_steps_only(args, props, commit, build_s) -> int:
    """``--train-steps-only``: graphed-step checks, then the four train steps
    per sensor timed in one run, a table and ratios."""
    chk = Checks()
    t0 = time.perf_counter()
    try:
        check_graph_step(chk)
    except Exception:
        traceback.print_exc()
        chk.flag("graphed step checks ran", False)
    print(f"checks took {time.perf_counter() - t0:.1f} s", flush=True)
    rows, res = graph_step_timings(reps=args.reps if args.reps != 30 else 10)
    ratios = print_graph_table(res)
    print("ratios: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    chk.report()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "device": props.name, "torch": torch.__version__, "cuda": torch.version.cuda, "commit": commit,
            "build_s": build_s, "checks": chk.rows, "timings": rows, "ratios": ratios, "raw": res,
        }, indent=1))
    return 1 if chk.failed else 0


if __name__ == "__main__":
    sys.exit(main())
