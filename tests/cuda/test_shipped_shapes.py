"""The shipped models' shapes on the fused kernels (width-128 colour MLP,
per-channel front kernels of width 128, plain normalisation): forward
against the float64 reference in both apply modes, per-channel weight
gradients in plain mode (tests/cuda/test_front_level.py checks softmax),
and the whole shipped model training on the kernels (forward, every weight
set's gradient against an f16-rounding float64 reference).

Tolerances: kpnt.testing.TOLERANCES, as tests/cuda/test_colour_level.py.
"""
import logging
import math

import pytest
import torch

from kpnt import ops
from kpnt.model import KPNT, ModelConfig
from kpnt.mosaic.cfa import CFA
from kpnt.ops import _cuda, capability, dispatch
from kpnt.ref.colour_level import colour_level as ref_colour_level
from kpnt.ref.front_level import front_level as ref_front
from kpnt.spec import ColourLevelSpec, FrontLevelSpec
from kpnt.testing import front_level_inputs as front_inputs
from kpnt.testing import TOLERANCES, fused_shapes, grad_vs_exact_bound
from kpnt.testing import mlp_f16_rounded, reference_mlp, rel_error as rel

pytestmark = pytest.mark.cuda
SLOPE = 0.01
SHIPPED = dict(width=128, front_width=128, front_kernels="per_channel", apply_mode="plain")


TOL_FWD = TOLERANCES["forward"]
#: The lines of kernels/shapes.def of the shipped models' shapes.
_SHIPPED_CONFIG = ModelConfig(**SHIPPED)
COLOUR_SHAPES = [s for s in fused_shapes("colour") if s.mlp == _SHIPPED_CONFIG.colour_spec.mlp]
FRONT_SHAPES = [s for s in fused_shapes("front") if s.mlp == _SHIPPED_CONFIG.front_spec.mlp
                and s.key == _SHIPPED_CONFIG.front_spec.fused_key()]
shape_id = str


def colour_spec(shape, mode="softmax"):
    return ColourLevelSpec(width=shape.mlp.hidden, hidden_layers=shape.mlp.n_hidden, leaky_slope=SLOPE,
                           apply_mode=mode)


def front_spec(shape, mode="softmax"):
    return FrontLevelSpec(radius=shape.key[0], kernels="shared" if shape.key[1] == 1 else "per_channel",
                          width=shape.mlp.hidden, hidden_layers=shape.mlp.n_hidden, leaky_slope=SLOPE,
                          apply_mode=mode)


def mlp_shapes(spec):
    """(out, in) of every matrix of a spec's MLP."""
    n_in, h, n_out, nh = spec.mlp.as_tuple()
    return [(h, n_in)] + [(h, h)] * (nh - 1) + [(n_out, h)]


def colour128(mode="softmax"):
    """The shipped colour level (width 128)."""
    return ColourLevelSpec(width=128, leaky_slope=SLOPE, apply_mode=mode)


def per_channel128(mode="softmax"):
    """The shipped front level (per-channel kernels, width 128)."""
    return FrontLevelSpec(kernels="per_channel", width=128, leaky_slope=SLOPE, apply_mode=mode)


def random_mlp(shapes, seed, last_scale=0.3):
    g = torch.Generator().manual_seed(seed)
    ws = [torch.randn(*s, generator=g) * math.sqrt(2 / s[1]) for s in shapes]
    ws[-1] *= last_scale
    return [w.cuda() for w in ws]


def model_start(sensor, seed, **config):
    """A model's initial weight sets (plain mode starts from normalised
    kernels, as training does) with random perturbations on the last
    layers (random plain-mode kernels would sum to ~0 somewhere, where any
    f16 evaluation differs from f32 by O(1): tests/cuda/test_colour_level.py).
    Scale 0.1: an f16-rounding float64 reference stays within 3e-4 of the
    exact one on these cases; at 0.3 some kernel sums cancel (5e-2)."""
    g = torch.Generator().manual_seed(seed)
    model = KPNT(sensor, ModelConfig(**config))
    sets = {}
    for name, ws in model.weight_sets().items():
        ws = [w.detach().clone() for w in ws]
        ws[-1][:, 1:] += torch.randn(ws[-1].shape[0], ws[-1].shape[1] - 1, generator=g) * 0.1
        sets[name] = [w.cuda() for w in ws]
    return sets


def colour_inputs(N, h, w, seed):
    g = torch.Generator().manual_seed(seed)
    D = torch.randn(N, 3, h, w, generator=g) * 0.03
    var = torch.rand(N, 3, h, w, generator=g) * 4e-4 + 1e-5
    return D.cuda(), var.cuda()


@pytest.mark.parametrize("line", COLOUR_SHAPES, ids=shape_id)
@pytest.mark.parametrize("mode", ["softmax", "plain"])
@pytest.mark.parametrize("shape", [(2, 37, 53), (1, 1, 3), (3, 5, 130)], ids=str)
def test_colour_level_shipped_shapes(shape, mode, line):
    N, h, w = shape
    spec = colour_spec(line, mode)
    if mode == "plain":
        ws = model_start("rgb", sum(shape), width=spec.width, hidden_layers=spec.hidden_layers,
                         apply_mode="plain")["colour"]
    else:
        ws = random_mlp(mlp_shapes(spec), seed=sum(shape))
    D, var = colour_inputs(N, h, w, seed=h * w)
    ref_I, ref_a = ref_colour_level(D.double(), var.double(), [x.double() for x in ws], spec)
    with torch.no_grad():
        I, a = _cuda.fused_colour_level(D, var, ws, spec)
    assert torch.isfinite(I).all() and torch.isfinite(a).all()
    assert rel(I, ref_I) < TOL_FWD and rel(a, ref_a) < TOL_FWD


@pytest.mark.parametrize("line", FRONT_SHAPES, ids=shape_id)
@pytest.mark.parametrize("mode", ["softmax", "plain"])
@pytest.mark.parametrize("cfa", [CFA.bayer("GRBG"), CFA.bayer("RGGB"), CFA.xtrans(), CFA.xtrans(2, 5)],
                         ids=lambda c: c.name)
@pytest.mark.parametrize("size", [(2, 23, 31), (1, 3, 4), (1, 40, 36)], ids=str)
def test_front_level_shipped_shapes(cfa, size, mode, line):
    N, H, W = size
    spec = front_spec(line, mode)
    x, U, S, noise = front_inputs(cfa, N, H, W, seed=H * W)
    if mode == "plain":
        sets = model_start(cfa.kind, seed=W, front_radius=spec.radius, front_kernels=spec.kernels,
                           front_width=spec.width, front_hidden_layers=spec.hidden_layers, apply_mode="plain")
        sets = [ws for name, ws in sets.items() if name.startswith("front.")]
    else:
        sets = [random_mlp(mlp_shapes(spec), seed=W + k) for k in range(cfa.n_classes)]
    ref = ref_front(x.double(), U.double(), S.double(), noise.double(), cfa, [[w.double() for w in ws] for ws in sets],
                    spec)
    with torch.no_grad():
        O = _cuda.fused_front_level(x, U, S, noise, cfa, sets, spec)
    assert torch.isfinite(O).all()
    # Each channel gets its own detail: a kernel that swapped roles or
    # channels would differ by O(1) relative to the detail itself.
    assert rel(O - U, ref - U.double()) < TOL_FWD


def test_per_channel_differs_from_shared_kernels():
    """The roles matter: the same weights read as one shared kernel (the
    first 25 logits) give another output, so the test above can fail."""
    cfa = CFA.bayer()
    x, U, S, noise = front_inputs(cfa, 1, 16, 16, seed=1)
    sets = [random_mlp(mlp_shapes(per_channel128()), seed=k) for k in range(2)]
    with torch.no_grad():
        O = _cuda.fused_front_level(x, U, S, noise, cfa, sets, per_channel128())
    per_role = (O - U).abs().amax(dim=(0, 2, 3))
    assert (per_role > 1e-4).all()
    assert not torch.allclose(O[:, 0], O[:, 1], atol=1e-4)


def test_shipped_shapes_are_listed():
    assert COLOUR_SHAPES and FRONT_SHAPES, "kernels/shapes.def lost the shipped models' lines"
    assert all(s.train for s in COLOUR_SHAPES + FRONT_SHAPES), "the shipped shapes must train on the kernels"


@pytest.mark.parametrize("cfa", [CFA.bayer("GBRG"), CFA.xtrans(1, 4)], ids=lambda c: c.name)
def test_per_channel_plain_weight_gradients(cfa):
    """Per-channel kernels in plain mode (what ships): dU and every class's
    weight gradient against the f16-rounding float64 reference."""
    N, H, W = 2, 29, 34
    spec = per_channel128("plain")
    x, U, S, noise = front_inputs(cfa, N, H, W, seed=5)
    U = U.requires_grad_()
    sets = model_start(cfa.kind, seed=6, front_radius=spec.radius, front_kernels=spec.kernels,
                       front_width=spec.width, front_hidden_layers=spec.hidden_layers, apply_mode="plain")
    sets = [[w.requires_grad_() for w in ws] for name, ws in sets.items() if name.startswith("front.")]
    flat = [w for ws in sets for w in ws]
    gO = torch.randn(N, 3, H, W, generator=torch.Generator().manual_seed(7)).cuda()
    U64 = U.detach().double().requires_grad_()
    sets64 = [[w.detach().double().requires_grad_() for w in ws] for ws in sets]
    flat64 = [w for ws in sets64 for w in ws]
    args = (x.double(), U64, S.double(), noise.double(), cfa, sets64, spec)
    ref16_g = torch.autograd.grad(ref_front(*args, mlp_fn=mlp_f16_rounded), [U64, *flat64], gO.double())
    ref_g = torch.autograd.grad(ref_front(*args), [U64, *flat64], gO.double())
    got = torch.autograd.grad(_cuda.fused_front_level(x, U, S, noise, cfa, sets, spec), [U, *flat], gO)
    for i, (a, b, c) in enumerate(zip(got, ref16_g, ref_g)):
        assert torch.isfinite(a).all(), i
        assert rel(a, b) < TOLERANCES["grad"], i
        assert rel(a, c) <= grad_vs_exact_bound(rel(a, b), rel(b, c)), i


def test_compiled_table_is_the_shapes_file():
    """The extension reports, as data, exactly the lines of kernels/shapes.def
    (train marks included), and the capability table uses it once loaded."""
    built = capability.from_extension(_cuda.shape_table())
    assert built == capability.parse_shapes(capability.shapes_file().read_text())
    ops.colour_level(*colour_inputs(1, 4, 4, seed=1), random_mlp([(64, 32)] + [(64, 64)] * 5 + [(16, 64)], seed=1),
                     ColourLevelSpec(leaky_slope=SLOPE), backend="cuda")
    assert capability.shapes() == built


@pytest.mark.parametrize("sensor", ["bayer", "xtrans"])
def test_shipped_model_trains_on_the_fused_kernels(sensor, monkeypatch, caplog):
    """The shipped model with its weights, backend 'auto' with gradients:
    both fused levels run (no fallback logged), and every weight set's
    gradient is within TOLERANCES['grad'] of a float64 model whose MLPs
    round like the kernels (as tools/bench_kernels.py check_model).  The
    mosaic is 2 x 131 x 157: on one 52 x 46 crop the f16-rounding reference
    itself was 1.5-2.7e-2 from the exact gradient, too few pixels to judge."""
    from kpnt.weights_io import load_weights, shipped_weights

    cfa = CFA.bayer("BGGR") if sensor == "bayer" else CFA.xtrans(2, 1)
    N, H, W = 2, 131, 157
    g = torch.Generator().manual_seed(3)
    x = (torch.rand(N, 1, H, W, generator=g) * 0.5 + 0.1).cuda()
    noise = torch.tensor([[[2e-3, 1e-3, 3e-3], [1e-5, 2e-5, 1e-5]]] * N, device="cuda")
    gout = torch.randn(N, 3, H, W, generator=g).cuda()
    model = load_weights(shipped_weights(sensor), sensor=sensor)[0].cuda()
    # The guide runs on cuDNN, whose float32 convolutions default to TF32
    # (10-bit mantissa): that rounding is not the kernels' and would show in
    # the guide's and the front sets' gradients.  This test judges the kernels.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    calls = []
    table = dispatch._backend_ops("cuda")
    for op in ("colour_level", "front_level"):
        real = table[op]

        def counted(*a, _real=real, _op=op, **kw):
            calls.append(_op)
            return _real(*a, **kw)
        monkeypatch.setitem(table, op, counted)
    monkeypatch.setattr(dispatch, "_unsupported_logged", set())
    for p in model.parameters():
        p.requires_grad_(True)
    model.backend = "auto"
    sets = model.weight_sets()
    with caplog.at_level(logging.WARNING, logger="kpnt.ops.dispatch"):
        out = model(x, cfa, noise)
    got = {k: torch.autograd.grad(out, v, gout, retain_graph=True) for k, v in sets.items()}
    assert set(calls) == {"colour_level", "front_level"}
    assert not [r for r in caplog.records if "reference" in r.getMessage()]

    model = model.double()
    model.backend = "torch"
    flat = lambda gs: torch.cat([t.reshape(-1) for t in gs])  # noqa: E731
    sets64 = model.weight_sets()
    out64 = model(x.double(), cfa, noise.double())
    exact = {k: flat(torch.autograd.grad(out64, v, gout.double(), retain_graph=True)) for k, v in sets64.items()}
    with reference_mlp(mlp_f16_rounded):         # its MLPs round like the kernels'
        out16 = model(x.double(), cfa, noise.double())
    for k, v in sets64.items():
        want = flat(torch.autograd.grad(out16, v, gout.double(), retain_graph=True))
        assert torch.isfinite(flat(got[k])).all(), k
        err, err_exact, f16_exact = rel(flat(got[k]), want), rel(flat(got[k]), exact[k]), rel(want, exact[k])
        note = f"{k}: {err:.2e} vs the f16-rounding reference, {err_exact:.2e} vs exact, f16 reference vs exact {f16_exact:.2e}"
        # As tests/cuda/test_colour_level.py: where f16 rounding itself moves
        # the gradient by more than the tolerance (white-noise mosaic, random
        # dL/dy), two f16 computations may differ by as much.
        assert err < max(TOLERANCES["grad"], f16_exact), note
        assert err_exact <= grad_vs_exact_bound(err, f16_exact), note
