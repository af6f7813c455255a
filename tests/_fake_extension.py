"""A CPU stand-in for the compiled extension, computed with the reference,
and CPU kernels for kpnt's custom ops, so that the autograd glue of
kpnt.ops._cuda (custom ops, saved tensors, gradients by input name, weight
packing) runs on a CPU.  Used by tests/test_fused_glue.py in a subprocess
(the CPU kernel registrations are process-wide).

The extension's functions take the f16 weights as the kernels do, but run
the reference in float32 (gradients through torch.func.vjp: a custom op's
implementation runs below autograd)."""
import numpy as np
import torch

from kpnt.mosaic.cfa import CFA
from kpnt.ref.colour_level import colour_level
from kpnt.ref.front_level import front_level
from kpnt.ref.mlp import mlp
from kpnt.spec import ColourLevelSpec, FrontLevelSpec


def unpack(w, dims):
    n_in, hidden, n_out, nh = dims
    shapes = [(hidden, n_in)] + [(hidden, hidden)] * (nh - 1) + [(n_out, hidden)]
    mats, o = [], 0
    for r, c in shapes:
        mats.append(w[o:o + r * c].view(r, c))
        o += r * c
    return mats


class FakeExt:
    """The extension's Python interface, computed by the reference from the
    float16 weights it is given (as the kernels read them); fmap carries what
    the backward needs.  Records the calls and the colour weight buffers."""

    def __init__(self):
        self.calls = []
        self.colour_weights = set()

    def mlp_forward(self, x, w, perm, offsets, dims, slope, wgmma=False):
        self.calls.append(("mlp_forward", w.dtype))
        return self._mlp(x, w.float(), perm, offsets, dims, slope)

    def _mlp(self, x, w, perm, offsets, dims, slope):
        if w.dim() == 1:
            return mlp(x, unpack(w, dims), slope)
        y = x.new_zeros(x.shape[0], dims[2])
        for g in range(w.shape[0]):
            rows = perm[offsets[g]:offsets[g + 1]].long()
            y = y.index_put((rows,), mlp(x[rows], unpack(w[g], dims), slope))
        return y

    def mlp_backward(self, x, w, perm, offsets, dy, dims, slope, need_dx, wgmma=False):
        self.calls.append(("mlp_backward", w.dtype))
        _, vjp = torch.func.vjp(lambda x_, w_: self._mlp(x_, w_, perm, offsets, dims, slope), x, w.float())
        dx, dw = vjp(dy)
        return (dx if need_dx else x.new_empty(0)), dw

    def _cspec(self, dims, slope, plain, noise_input):
        return ColourLevelSpec(width=dims[1], hidden_layers=dims[3], leaky_slope=slope,
                               apply_mode="plain" if plain else "softmax", noise_input=noise_input)

    def colour_forward(self, D, var, w, dims, slope, plain, noise_input, consts, wgmma=False):
        self.calls.append(("colour_forward", w.dtype))
        self.colour_weights.add(w.data_ptr())
        I, a = colour_level(D, var, unpack(w.float(), dims), self._cspec(dims, slope, plain, noise_input))
        return I, a, var.clone()          # the real fmap holds the features; here var stands in

    def colour_backward(self, D, fmap, w, dI, da, dims, slope, plain, consts, wgmma=False):
        self.calls.append(("colour_backward", w.dtype))
        f = lambda w_: colour_level(D, fmap, unpack(w_, dims), self._cspec(dims, slope, plain, True))
        _, vjp = torch.func.vjp(f, w.float())
        return vjp((dI, da))[0]

    def _front(self, x, U, S, noise, w, tables, dims, ints, slope, plain, noise_input):
        P, T, K = ints
        cfa = CFA(np.asarray(tables[2].tolist(), dtype=np.int64).reshape(P, P))
        radius = (int(round(T ** 0.5)) - 1) // 2
        spec = FrontLevelSpec(radius=radius, kernels="shared" if K == 1 else "per_channel", width=dims[1],
                              hidden_layers=dims[3], leaky_slope=slope, apply_mode="plain" if plain else "softmax",
                              noise_input=noise_input)
        # The kernels read the taps in the order of the tap table they are
        # given (front_level.TAP_ORDER): find it, and put the weights back in
        # canonical order for the reference.
        from kpnt.ops._cuda.front_level import _tables, _weights_in_canonical_order

        pattern = tuple(int(v) for v in cfa.pattern.reshape(-1))
        canonical = _tables(pattern, radius, "cpu")[1].tolist()
        given = tables[3].cpu().tolist()
        order = tuple(next(t for t in range(T) if all(c[t] == g[j] for c, g in zip(canonical, given)))
                      for j in range(T))
        if order != tuple(range(T)):
            w = _weights_in_canonical_order(w, dims, K, order)
        return front_level(x, U, S, noise, cfa, [unpack(w[g], dims) for g in range(w.shape[0])], spec)

    def front_forward(self, x, U, S, noise, w, tables, dims, ints, slope, plain, noise_input, consts, wgmma=False):
        self.calls.append(("front_forward", w.dtype))
        O = self._front(x, U, S, noise, w.float(), tables, dims, ints, slope, plain, noise_input)
        return O, x.new_zeros(x.shape[0], 4, *x.shape[2:])

    def front_backward(self, x, U, S, noise, w, tables, fmap, dO, dims, ints, slope, plain, noise_input, consts,
                       wgmma=False, spread=1):
        assert 0 <= spread <= 64, spread           # the binding's range (blocks only: the gradients do not change)
        self.calls.append(("front_backward", w.dtype))
        P = ints[0]
        cfa = CFA(np.asarray(tables[2].tolist(), dtype=np.int64).reshape(P, P))
        f = lambda U_, w_: self._front(x, U_, S, noise, w_, tables, dims, ints, slope, plain, noise_input)
        _, vjp = torch.func.vjp(f, U, w.float())
        return tuple(vjp(dO))

    def colour_taps(self):
        from kpnt.ref.taps import DIAMOND
        return [tuple(int(v) for v in t) for t in DIAMOND]

    def shape_table(self):
        from kpnt.ops import capability
        rows = []
        for s in capability.parse_shapes(capability.shapes_file().read_text()):
            k0, k1 = (s.key[0], 0) if s.op == "colour" else s.key
            rows.append((s.op, k0, k1, *s.mlp.as_tuple(), int(s.train)))
        return rows


def install():
    """Route kpnt's custom ops to CPU kernels (their CUDA impls, which call
    the extension) and the extension to FakeExt."""
    import kpnt.ops._cuda as pkg
    from kpnt.ops._cuda import colour_level as cl, extension as ext_mod, front_level as fl, mlp as ml

    fake = FakeExt()
    for mod in (pkg, ext_mod, cl, fl, ml):
        if hasattr(mod, "ext"):
            mod.ext = lambda: fake
    for op, impl in ((ml._mlp_fwd, ml._mlp_fwd_impl), (cl._colour_fwd, cl._colour_fwd_impl),
                     (fl._front_fwd, fl._front_fwd_impl)):
        op.register_kernel("cpu")(impl)
    for op in (ml._mlp_bwd, cl._colour_bwd, fl._front_bwd):
        op.register_kernel("cpu")(op._init_fn)
    return fake


def skip_device_checks():
    """The fused ops refuse CPU tensors; here they are the point."""
    from kpnt.ops._cuda import colour_level as cl, front_level as fl, mlp as ml
    cl._check_image = lambda *a, **k: None
    fl._check_tensors = lambda *a, **k: None
    ml.check_x = lambda *a, **k: None


def run() -> dict:
    """Model forward/backward on the 'cuda' backend (this fake) vs the
    reference, with f16-exact weights so both compute the same numbers;
    gradients to D/var and x/U/S through the reference-around-fused paths."""
    import torch

    from kpnt.model import KPNT, ModelConfig
    from kpnt.ops import _cuda, dispatch
    from kpnt.ref.colour_level import colour_level as ref_colour
    from kpnt.ref.front_level import front_level as ref_front
    from kpnt.testing import front_level_inputs, rel_error as rel

    fake = install()
    skip_device_checks()
    real = dispatch.resolve_backend
    dispatch.resolve_backend = lambda b, d: "cuda" if b in ("auto", "cuda") else real(b, d)
    torch.manual_seed(0)
    out = {}
    for sensor, cfa in (("bayer", CFA.bayer("GRBG")), ("xtrans", CFA.xtrans(1, 2))):
        for mode in ("softmax", "plain"):
            m = KPNT(sensor, ModelConfig(apply_mode=mode))
            with torch.no_grad():
                for p in m.parameters():
                    p.add_(0.05 * torch.randn_like(p) * (p != 0))
                    p.copy_(p.half().float())
            x, n, t = torch.rand(2, 1, 30, 36), torch.tensor([[[1e-3] * 3, [1e-5] * 3]] * 2), torch.rand(2, 3, 30, 36)
            res = {}
            for be in ("torch", "cuda"):
                m.backend = be
                fake.calls.clear()
                fake.colour_weights.clear()
                y = m(x, cfa, n)
                res[be] = (y, torch.autograd.grad(((y - t) ** 2).mean(), list(m.parameters())))
            out[f"{sensor} {mode}"] = {
                "fwd": rel(res["cuda"][0], res["torch"][0]),
                "grad": max(rel(a, b) for a, b in zip(res["cuda"][1], res["torch"][1])),
                "calls": sorted({c for c, _ in fake.calls}),
                "dtypes": sorted({str(d) for _, d in fake.calls}),
                "colour_buffers": len(fake.colour_weights),
                "colour_calls": sum(c == "colour_forward" for c, _ in fake.calls),
            }
    ws = [w.detach().half().float().requires_grad_() for w in KPNT("rgb").weight_sets()["colour"]]
    D, var = torch.randn(1, 3, 9, 11) * 0.05, torch.full((1, 3, 9, 11), 4e-4)
    spec = ModelConfig().colour_spec
    g = []
    for fn in (_cuda.fused_colour_level, ref_colour):
        Dq, vq = D.clone().requires_grad_(), var.clone().requires_grad_()
        I, a = fn(Dq, vq, ws, spec)
        g.append(torch.autograd.grad(I.square().sum() + a.sum(), [Dq, vq, *ws]))
    out["colour dD dvar dW"] = max(rel(a, b) for a, b in zip(*g))
    m, cfa = KPNT("bayer"), CFA.bayer()
    sets = [[w.detach().half().float().requires_grad_() for w in v] for k, v in m.weight_sets().items()
            if k.startswith("front")]
    x, U, S, noise = front_level_inputs(cfa, 1, 12, 14, 3, device="cpu")
    g = []
    for fn in (_cuda.fused_front_level, ref_front):
        xs, Us, Ss = (v.clone().requires_grad_() for v in (x, U, S))
        O = fn(xs, Us, Ss, noise, cfa, sets, m.config.front_spec)
        g.append(torch.autograd.grad(O.square().sum(), [xs, Us, Ss, *sets[0], *sets[1]]))
    out["front dx dU dS dW"] = max(rel(a, b) for a, b in zip(*g))
    out["tap order"] = tap_order_cases()
    return out


def tap_order_cases() -> dict:
    """front_level.TAP_ORDER on the fused glue against the reference (which
    knows only canonical order), for shared and per-channel kernels and
    both CFA kinds: the output, dU and dW through the fused backward, and
    dx / dU / dS / dW through the reference fallback, which must put the
    weights back in canonical order."""
    import torch

    from kpnt.ops import _cuda
    from kpnt.ops._cuda import front_level as fl
    from kpnt.ref.front_level import front_level as ref_front
    from kpnt.spec import FrontLevelSpec
    from kpnt.testing import front_level_inputs, rel_error as rel

    out = {}
    fl.TAP_ORDER = fl.SEARCHED_TAP_ORDER
    try:
        for cfa in (CFA.bayer("GBRG"), CFA.xtrans(2, 3)):
            for kernels in ("shared", "per_channel"):
                spec = FrontLevelSpec(kernels=kernels, width=64)
                n_in, hidden, n_out, n_hidden = spec.mlp.as_tuple()
                g = torch.Generator().manual_seed(4)
                shapes = [(hidden, n_in)] + [(hidden, hidden)] * (n_hidden - 1) + [(n_out, hidden)]
                sets = [[(torch.randn(r, c, generator=g) / c ** 0.5).half().float().requires_grad_()
                         for r, c in shapes] for _ in range(cfa.n_classes)]
                flat = [w for ws in sets for w in ws]
                x, U, S, noise = front_level_inputs(cfa, 1, 18, 24, 6, device="cpu")
                errors = {}
                for wrt in ("U W", "x U S W"):
                    grads = []
                    for fn in (_cuda.fused_front_level, ref_front):
                        leaves = {n: v.clone().requires_grad_(n in wrt.split()) for n, v in
                                  (("x", x), ("U", U), ("S", S))}
                        O = fn(leaves["x"], leaves["U"], leaves["S"], noise, cfa, sets, spec)
                        want = [leaves[n] for n in wrt.split() if n != "W"] + flat
                        grads.append((O.detach(), *torch.autograd.grad(O.square().sum(), want)))
                    errors[wrt] = max(rel(a, b) for a, b in zip(*grads))
                out[f"{cfa.kind} {kernels}"] = errors
    finally:
        fl.TAP_ORDER = None
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(run()))
