"""Correctness checks of tools/bench_kernels.py: fused MLP shapes, colour and
front levels, whole model, forward-only shapes, shipped models, the
CUDA-graph training step, and the compute-sanitizer case.  Tolerances:
:data:`kpnt.testing.TOLERANCES`."""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from kpnt.ops import _cuda
from kpnt.mosaic.kinds import MOSAIC_KINDS
from kpnt.testing import grad_vs_exact_bound, reference_mlp, rel_error as rel
from kbench_common import (
    BAYER, COLOUR, COLOUR128, Checks, FRONT, SLOPE, TOL_FWD, TOL_GRAD, XTRANS, bench_cfa, f16_mlp64, grad_rel, make_weights,
    make_x, model_inputs, poison_cache, smape_loss, torch_mlp, torch_mlp_f16,
)


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
    # Per weight matrix: fused vs f16 reference, fused vs exact, f16 reference vs exact.
    errs = [(rel(g, r), rel(g, e), rel(r, e)) for g, r, e in zip(grads[1:], ref16_grads[1:], ref_grads[1:])]
    chk.add(f"{tag} dW rel err vs f16-rounding ref", max(f16 for f16, _, _ in errs), TOL_GRAD, "worst matrix")
    # Against the exact reference: no worse than f16 rounding itself and the
    # distance from the f16 reference add up to (kpnt.testing.grad_vs_exact_bound).
    excess, worst64, inherent = max((ex - grad_vs_exact_bound(f16, inh), ex, inh) for f16, ex, inh in errs)
    chk.add(f"{tag} dW rel err vs f64 over its bound", excess, 0.0,
            f"(worst matrix: fused {worst64:.2e}, f16 ref {inherent:.2e})")

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
        vs_f16 = grad_rel(gw, ref16_g)
        chk.add(f"{tag} dW vs f16-rounding ref", vs_f16, TOL_GRAD, "worst matrix")
        inherent = grad_rel(ref16_g, ref_g)
        exact = grad_rel(gw, ref_g)
        excess = exact - grad_vs_exact_bound(vs_f16, inherent)
        chk.add(f"{tag} dW vs f64 over its bound", excess, 0.0, f"(fused {exact:.2e}, f16 ref {inherent:.2e})")
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


def check_model(chk: Checks, arch: str = "default"):
    """Whole model, fused backend vs reference: output and every weight set's
    gradient (Bayer and X-Trans, sizes that are multiples of nothing).
    ``arch``: 'default' (DESIGN.md's architecture, initial weights) or
    'shipped' (the shipped models with their weights, ``kpnt/weights``)."""
    # The guide runs on cuDNN, whose float32 convolutions default to TF32
    # (10-bit mantissa): rounding that is not the kernels', which these checks
    # judge (session 11: it was the shipped X-Trans model's 1.7e-2).
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        _check_model(chk, arch)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def _check_model(chk: Checks, arch: str):
    from kpnt.model import KPNT

    for sensor, (N, H, W) in ((BAYER, (2, 203, 317)), (XTRANS, (2, 211, 299))):
        x, cfa, noise, target = model_inputs(sensor, N, H, W, seed=7)
        res = {}
        for name, be, dt in (("fused", "cuda", torch.float32), ("f64", "torch", torch.float64),
                             ("f64-f16mlp", "torch", torch.float64)):
            m = (shipped_model(sensor) if arch == "shipped" else KPNT(sensor)).cuda().to(dt)
            m.backend = be
            for p in m.parameters():
                p.requires_grad_(True)
            with reference_mlp(f16_mlp64) if name == "f64-f16mlp" else contextlib.nullcontext():
                out = m(x.to(dt), cfa, noise.to(dt))
                sets = m.weight_sets()
                grads = {k: torch.autograd.grad(smape_loss(out, target.to(dt)), v, retain_graph=True)
                         for k, v in sets.items()}
            res[name] = (out.detach(), grads)
        tag = f"model {arch} {sensor}"
        chk.add(f"{tag} {N}x{H}x{W} output rel err vs f64", rel(res["fused"][0], res["f64"][0]), TOL_FWD)
        for k in res["fused"][1]:
            cat = lambda gs: torch.cat([g.reshape(-1) for g in gs])
            e16 = rel(cat(res["fused"][1][k]), cat(res["f64-f16mlp"][1][k]))
            e64 = rel(cat(res["fused"][1][k]), cat(res["f64"][1][k]))
            inh = rel(cat(res["f64-f16mlp"][1][k]), cat(res["f64"][1][k]))
            chk.add(f"{tag} grad '{k}' vs f16-rounding ref", e16, TOL_GRAD,
                    f"(vs exact f64 {e64:.2e}; f16 ref vs exact {inh:.2e})")


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
    from kpnt.weights_io import load_weights, shipped_weights

    return load_weights(shipped_weights(sensor), sensor=sensor)[0].eval()


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


def sanitize_case():
    """Small launches of every kernel, for compute-sanitizer."""
    from kpnt.model import KPNT
    from kpnt.spec import ColourLevelSpec

    from kpnt.model import ModelConfig

    for dims in (COLOUR, COLOUR128):                 # in-block and split backward
        ws = make_weights(dims, seed=1)
        for shape in ((2, 3, 19, 23), (1, 3, 1, 2)):
            D = torch.randn(*shape, device="cuda") * 0.03
            var = torch.rand(*shape, device="cuda") * 1e-3 + 1e-5
            for mode in ("softmax", "plain"):
                spec = ColourLevelSpec(width=dims[1], hidden_layers=dims[3], leaky_slope=SLOPE, apply_mode=mode)
                I, a = _cuda.fused_colour_level(D, var, ws, spec)
                torch.autograd.grad((I, a), ws, [torch.randn_like(I), torch.randn_like(a)])
    x = make_x(301, 32)
    wf = make_weights(FRONT, seed=2)
    torch.autograd.grad(_cuda.fused_mlp(x, wf, SLOPE).square().sum(), wf)
    wg = make_weights(FRONT, groups=3, seed=3)
    cls = torch.randint(0, 3, (301,), device="cuda")
    torch.autograd.grad(_cuda.fused_mlp_grouped(x, cls, wg, SLOPE).square().sum(), wg)
    wide = ModelConfig(width=128, front_width=128, front_kernels="per_channel", apply_mode="plain")
    for sensor in MOSAIC_KINDS:
        xm, cfa, noise, target = model_inputs(sensor, 1, 37, 41, seed=5)
        for m in (KPNT(sensor, backend="cuda"), KPNT(sensor, wide, backend="cuda"), shipped_model(sensor)):
            m = m.cuda()
            m.backend = "cuda"
            for p in m.parameters():
                p.requires_grad_(True)
            smape_loss(m(xm, cfa, noise), target).backward()
    # The guide's fused projection block (inference only): every kernel this GPU runs, partial tiles, two images.
    from kpnt.ops._cuda.guide_block import KERNELS, fused_proj_block, wgmma_built

    z = torch.rand(2, 64, 19, 37, device="cuda").half().contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(64, 64, 3, 3, device="cuda").half() * 0.06, torch.randn(64, device="cuda") * 0.1
    p, c = torch.randn(64, 64, 1, 1, device="cuda").half() * 0.12, torch.randn(64, device="cuda") * 0.1
    with torch.no_grad():
        for kernel in KERNELS:
            if kernel != "wgmma" or wgmma_built(torch.cuda.current_device()):
                fused_proj_block(z, w, b, p, c, kernel)
    # The guide's fused finish (f16 channels-last network output, an odd crop) and both up_block kernels.
    from kpnt.mosaic.cfa import CFA
    from kpnt.ops._cuda.up_block import KERNELS as UP_KERNELS

    r16 = torch.randn(2, 48, 9, 11, device="cuda").half().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        _cuda.fused_guide_finish(torch.rand(2, 3, 33, 40, device="cuda"), r16, torch.rand(2, 1, 9, 11, device="cuda"),
                                 4, 1, 3)
        for kernel in UP_KERNELS:
            _cuda.fused_up_block(torch.rand(2, 3, 7, 9, device="cuda"), CFA.xtrans(), kernel)
        from kpnt.ops._cuda import pyramid as pyramid_op

        fused_before, pyramid_op.FUSED = pyramid_op.FUSED, True   # the pyramid's kernels, odd and tiny levels
        try:
            for shape in ((2, 3, 19, 23), (1, 3, 1, 2)):
                lvl = torch.rand(*shape, device="cuda")
                _cuda.fused_pyramid_up(_cuda.fused_pyramid_down(lvl), shape[-2:])
                with torch.enable_grad():                   # up's adjoint (its backward in training)
                    c = _cuda.fused_pyramid_down(lvl).requires_grad_()
                    torch.autograd.grad(_cuda.fused_pyramid_up(c, shape[-2:]).sum(), c)
        finally:
            pyramid_op.FUSED = fused_before
        with torch.enable_grad():                           # up_block's adjoint (its backward in training)
            for cfa_a in (CFA.xtrans(), CFA.bayer("RGGB")):
                o = torch.rand(2, 3, 7, 9, device="cuda", requires_grad=True)
                torch.autograd.grad(_cuda.fused_up_block(o, cfa_a).sum(), o)
        for cfa_s, pack_s in ((CFA.bayer("GBRG"), 2), (CFA.xtrans(2, 5), 1)):   # the guide's fused start, odd sizes
            _cuda.fused_guide_start(torch.rand(2, 1, 23, 29, device="cuda"), torch.rand(2, 3, 23, 29, device="cuda"),
                                    torch.full((2, 2, 3), 1e-3, device="cuda"), cfa_s, pack_s, True)
    import importlib

    guide_op = importlib.import_module("kpnt.ops.guide")   # the module (kpnt.ops re-exports its function)
    fused_block_before, guide_op.FUSED_BLOCK = guide_op.FUSED_BLOCK, True
    try:
        with torch.no_grad():                        # the shipped Bayer guide's blocks fused, inside the model
            m = shipped_model(BAYER).cuda()
            m.backend = "cuda"
            xm, cfa, noise, _ = model_inputs(BAYER, 2, 37, 41, seed=6)
            m(xm, cfa, noise)
    finally:
        guide_op.FUSED_BLOCK = fused_block_before
    torch.cuda.synchronize()
    print("sanitize case done", flush=True)


def step_batch(sensor, cfa, N, H, W, seed, nan_target=False, device="cuda"):
    """A training batch (kpnt.train.synthesis.Batch) on ``device`` (the GPU
    by default): smooth scene sampled through ``cfa`` plus noise; optionally
    one NaN target pixel (a step the trainer must skip)."""
    from kpnt.train.synthesis import Batch

    g = torch.Generator(device).manual_seed(seed)
    base = F.interpolate(torch.rand(N, 3, H // 16 + 2, W // 16 + 2, device=device, generator=g), size=(H, W),
                         mode="bilinear", align_corners=False) * 0.6
    col = torch.from_numpy(cfa.colour_map(H, W)).to(device).long().expand(N, 1, H, W)
    x = base.gather(1, col) + torch.randn(N, 1, H, W, device=device, generator=g) * 0.02
    noise = torch.tensor([[2e-3] * 3, [1e-5] * 3], device=device).expand(N, 2, 3).contiguous()
    target = base.clone()
    if nan_target:
        target[0, 1, H // 2, W // 3] = float("nan")
    valid = torch.ones(N, 1, H, W, dtype=torch.bool, device=device)
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
    from kpnt.train.graph_step import FUSED_ADAM, GraphedStep, adam_for_graphs, eager_step

    for sensor, (N, H, W) in ((BAYER, (2, 160, 224)), (XTRANS, (2, 168, 228))):
        me = KPNT(sensor, backend="cuda").cuda()
        mg = KPNT(sensor, backend="cuda").cuda()
        oe = torch.optim.Adam(me.parameters(), lr=1e-3, fused=FUSED_ADAM)   # the same update as the graph's
        og = adam_for_graphs(mg.parameters(), lr=1e-3)
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
