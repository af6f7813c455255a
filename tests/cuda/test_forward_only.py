"""Forward-only fused configurations (the shipped models' shapes): the
width-128 colour MLP and per-channel front kernels, against the float64
reference, and how ``kpnt.ops`` routes them (fused without weight
gradients, reference with them, never silently).

Parametrised over the forward-only lines of kernels/shapes.def; tolerance
(kpnt.testing.TOLERANCES) as tests/cuda/test_colour_level.py: forward < 2e-3
against float64.
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
from kpnt.testing import TOLERANCES, fused_shapes
from kpnt.testing import rel_error as rel

pytestmark = pytest.mark.cuda
SLOPE = 0.01
SHIPPED = dict(width=128, front_width=128, front_kernels="per_channel", apply_mode="plain")


TOL_FWD = TOLERANCES["forward"]
#: The forward-only lines of kernels/shapes.def (the shipped models' shapes).
COLOUR_SHAPES = [s for s in fused_shapes("colour", train=False)]
FRONT_SHAPES = [s for s in fused_shapes("front", train=False)]
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
    """The shipped colour level (width 128, forward only)."""
    return ColourLevelSpec(width=128, leaky_slope=SLOPE, apply_mode=mode)


def per_channel128(mode="softmax"):
    """The shipped front level (per-channel kernels, width 128, forward only)."""
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
def test_colour_level_forward_only_shapes(shape, mode, line):
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
def test_front_level_forward_only_shapes(cfa, size, mode, line):
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


def test_forward_only_shapes_refuse_gradients():
    D, var = colour_inputs(1, 8, 8, seed=2)
    ws = [w.requires_grad_() for w in random_mlp(mlp_shapes(colour128()), seed=3)]
    I, a = _cuda.fused_colour_level(D, var, ws, colour128())
    with pytest.raises(ValueError, match="forward only"):
        torch.autograd.grad(I.sum() + a.sum(), ws)
    cfa = CFA.bayer()
    x, U, S, noise = front_inputs(cfa, 1, 8, 8, seed=4)
    sets = [[w.requires_grad_() for w in random_mlp(mlp_shapes(per_channel128()), seed=k)] for k in range(2)]
    O = _cuda.fused_front_level(x, U, S, noise, cfa, sets, per_channel128())
    with pytest.raises(ValueError, match="forward only"):
        torch.autograd.grad(O.sum(), sets[0])


def test_compiled_table_is_the_shapes_file():
    """The extension reports, as data, exactly the lines of kernels/shapes.def
    (forward-only marks included), and the capability table uses it once loaded."""
    built = capability.from_extension(_cuda.shape_table())
    assert built == capability.parse_shapes(capability.shapes_file().read_text())
    assert any(not s.train for s in built)
    ops.colour_level(*colour_inputs(1, 4, 4, seed=1), random_mlp([(64, 32)] + [(64, 64)] * 5 + [(16, 64)], seed=1),
                     ColourLevelSpec(leaky_slope=SLOPE), backend="cuda")
    assert capability.shapes() == built


@pytest.mark.parametrize("sensor", ["bayer", "xtrans"])
def test_model_of_the_shipped_shape_runs_fused_for_inference_and_reference_for_training(sensor, monkeypatch, caplog):
    cfa = CFA.bayer() if sensor == "bayer" else CFA.xtrans()
    x = torch.rand(1, 1, 48, 48, device="cuda") * 0.5 + 0.1
    noise = torch.tensor([[[2e-3, 1e-3, 3e-3], [1e-5, 2e-5, 1e-5]]], device="cuda")
    model = KPNT(sensor, ModelConfig(**SHIPPED), backend="auto").cuda()
    calls = []
    table = dispatch._backend_ops("cuda")
    for op in ("colour_level", "front_level"):
        real = table[op]

        def counted(*a, _real=real, _op=op, **kw):
            calls.append(_op)
            return _real(*a, **kw)
        monkeypatch.setitem(table, op, counted)
    with torch.no_grad():
        fused = model(x, cfa, noise)
    assert set(calls) == {"colour_level", "front_level"}
    model.backend = "torch"
    with torch.no_grad():
        ref = model(x, cfa, noise)
    assert rel(fused, ref) < TOL_FWD

    calls.clear()
    model.backend = "auto"
    monkeypatch.setattr(dispatch, "_unsupported_logged", set())
    with caplog.at_level(logging.WARNING, logger="kpnt.ops.dispatch"):
        out = model(x, cfa, noise)
    assert calls == []                    # weights need gradients: the reference ran
    assert any("forward only" in r.getMessage() for r in caplog.records)
    out.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="forward only"):
        model.backend = "cuda"
        model(x, cfa, noise)
