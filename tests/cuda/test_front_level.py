"""Fused mosaic front level (kpnt.ops._cuda.fused_front_level) vs the
reference (kpnt.ref.front_level.front_level): output, dU, per-class weight
gradients, for Bayer and X-Trans in several phases, for every trainable
front line of kernels/shapes.def (tolerances: kpnt.testing.TOLERANCES)."""
import math

import pytest
import torch

from kpnt import ops
from kpnt.mosaic.cfa import CFA
from kpnt.ops import _cuda
from kpnt.testing import mlp_f16_rounded as mlp_f16
from kpnt.testing import front_level_inputs
from kpnt.testing import TOLERANCES, fused_shapes, grad_vs_exact_bound
from kpnt.testing import rel_error as rel
from kpnt.ref.front_level import front_level as ref_front
from kpnt.spec import FrontLevelSpec

pytestmark = pytest.mark.cuda
SLOPE = 0.01
#: The default model's front level, for the tests that need one.
SPEC = FrontLevelSpec(leaky_slope=SLOPE)
#: Every trainable front line of kernels/shapes.def, as a spec.
SPECS = [FrontLevelSpec(radius=s.key[0], kernels="shared" if s.key[1] == 1 else "per_channel", width=s.mlp.hidden,
                        hidden_layers=s.mlp.n_hidden, leaky_slope=SLOPE) for s in fused_shapes("front", train=True)]
TOL_FWD, TOL_GRAD = TOLERANCES["forward"], TOLERANCES["grad"]


def weight_sets(n, seed, spec=SPEC):
    g = torch.Generator().manual_seed(seed)
    n_in, h, n_out, nh = spec.mlp.as_tuple()
    shapes = [(h, n_in)] + [(h, h)] * (nh - 1) + [(n_out, h)]
    sets = []
    for _ in range(n):
        ws = [torch.randn(*s, generator=g) * math.sqrt(2 / s[1]) for s in shapes]
        ws[-1] *= 0.3
        sets.append([w.cuda().requires_grad_() for w in ws])
    return sets


def inputs(cfa, N, H, W, seed):
    x, U, S, noise = front_level_inputs(cfa, N, H, W, seed)
    return x, U.requires_grad_(), S, noise


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"r{s.radius}-{s.kernels}-{s.width}x{s.hidden_layers}")
@pytest.mark.parametrize("cfa", [CFA.bayer("GRBG"), CFA.xtrans(), CFA.xtrans(2, 5)], ids=lambda c: c.kind)
@pytest.mark.parametrize("size", [(2, 23, 31), (1, 3, 4)], ids=str)
def test_forward_and_gradients(cfa, size, spec):
    check_against_the_reference(cfa, size, spec)


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"r{s.radius}-{s.kernels}-{s.width}x{s.hidden_layers}")
@pytest.mark.parametrize("cfa", [CFA.bayer("GBRG"), CFA.xtrans(1, 4)], ids=lambda c: c.kind)
def test_taps_in_the_searched_order_match_the_reference(monkeypatch, cfa, spec):
    """front_level.TAP_ORDER: the kernels read the taps in another column
    order, the packed weights are permuted to match; the reference knows
    only canonical order."""
    from kpnt.ops._cuda import front_level

    if spec.radius != 2:
        pytest.skip("the searched order is of radius 2's 25 taps")
    monkeypatch.setattr(front_level, "TAP_ORDER", front_level.SEARCHED_TAP_ORDER)
    check_against_the_reference(cfa, (2, 23, 31), spec)


def check_against_the_reference(cfa, size, spec):
    """The fused level's output and gradients to U and every weight set
    against float64 references (exact, and with the MLP rounded as f16)."""
    N, H, W = size
    x, U, S, noise = inputs(cfa, N, H, W, seed=H * W)
    sets = weight_sets(cfa.n_classes, seed=W, spec=spec)
    flat = [w for ws in sets for w in ws]
    gO = torch.randn(N, 3, H, W, device="cuda")
    U64 = U.detach().double().requires_grad_()
    sets64 = [[w.detach().double().requires_grad_() for w in ws] for ws in sets]
    flat64 = [w for ws in sets64 for w in ws]
    args = (x.double(), U64, S.double(), noise.double(), cfa, sets64, spec)
    ref = ref_front(*args)
    ref_g = torch.autograd.grad(ref, [U64, *flat64], gO.double())
    ref16_g = torch.autograd.grad(ref_front(*args, mlp_fn=mlp_f16), [U64, *flat64], gO.double())

    O = _cuda.fused_front_level(x, U, S, noise, cfa, sets, spec)
    assert torch.isfinite(O).all()
    assert rel(O - U, ref - U64) < TOL_FWD
    got = torch.autograd.grad(O, [U, *flat], gO)
    for a, b, c in zip(got, ref16_g, ref_g):
        assert torch.isfinite(a).all()
        assert rel(a, b) < TOL_GRAD
        assert rel(a, c) <= grad_vs_exact_bound(rel(a, b), rel(b, c))


def test_mosaic_gradient_through_the_reference_path():
    cfa = CFA.bayer()
    x, U, S, noise = inputs(cfa, 1, 12, 14, seed=1)
    x.requires_grad_()
    sets = weight_sets(2, seed=2)
    gO = torch.randn(1, 3, 12, 14, device="cuda")
    got = torch.autograd.grad(_cuda.fused_front_level(x, U, S, noise, cfa, sets, SPEC), [x, U], gO)
    want = torch.autograd.grad(ref_front(x, U, S, noise, cfa, sets, SPEC, mlp_fn=_cuda.dispatch_mlp), [x, U], gO)
    for a, b in zip(got, want):
        assert rel(a, b) < TOLERANCES["glue"]


def test_dispatch_uses_the_fused_front_level():
    cfa = CFA.xtrans()
    x, U, S, noise = inputs(cfa, 1, 18, 20, seed=3)
    sets = weight_sets(3, seed=4)
    got = ops.front_level(x, U, S, noise, cfa, sets, SPEC, backend="cuda")
    assert torch.equal(got, _cuda.fused_front_level(x, U, S, noise, cfa, sets, SPEC))


def test_radius_other_than_two_is_refused():
    cfa = CFA.bayer()
    x, U, S, noise = inputs(cfa, 1, 8, 8, seed=5)
    radius1 = FrontLevelSpec(radius=1, width=64, hidden_layers=4, leaky_slope=SLOPE)
    # no KPNT_FRONT line of kernels/shapes.def has radius 1 (9 taps, 16 inputs)
    with pytest.raises(ValueError, match="9 taps|no kernel for \\(in=16"):
        _cuda.fused_front_level(x, U, S, noise, cfa, weight_sets(2, 6), radius1)


@pytest.mark.parametrize("cfa", [CFA.xtrans(), CFA.bayer("RGGB")], ids=lambda c: c.kind)
def test_rows_by_site_give_the_same_outputs_and_gradients(monkeypatch, cfa):
    """ROWS_BY_SITE changes only the order of a class's rows: the output is
    the same bits (every row's MLP and epilogue are its own); dU and the
    weight gradients agree to 1e-3, a tenth of the tolerance against the
    reference.  Not closer: the backward scales each tile's dL/dy by a power
    of two before rounding it to float16 (``kernels/mlp_core.cuh``
    ``scale_tile_dy``), regrouped tiles have other maxima, so the values in
    float16's subnormal range round differently.  Session 42 (H100), the
    first run of this test: the weight gradients differed by 5.4e-5
    (Bayer) and 7.3e-5 (X-Trans)."""
    from kpnt.ops._cuda import front_level

    N, H, W = 2, 60, 66
    x, U, S, noise = inputs(cfa, N, H, W, seed=7)
    sets = weight_sets(cfa.n_classes, seed=8)
    flat = [w for ws in sets for w in ws]
    gO = torch.randn(N, 3, H, W, device="cuda")
    got = {}
    for by_site in (False, True):
        monkeypatch.setattr(front_level, "ROWS_BY_SITE", by_site)
        O = _cuda.fused_front_level(x, U, S, noise, cfa, sets, SPEC)
        got[by_site] = (O.detach(), *torch.autograd.grad(O, [U, *flat], gO))
    assert torch.equal(got[False][0], got[True][0])
    for a, b in zip(got[False][1:], got[True][1:]):
        assert rel(b, a) < 1e-3, rel(b, a)


@pytest.mark.parametrize("cfa", [CFA.xtrans(), CFA.bayer("RGGB")], ids=lambda c: c.kind)
@pytest.mark.parametrize("size", [(2, 96, 102), (1, 8, 10)], ids=["rows", "tiny"])
def test_backward_blocks_spread_or_balanced_give_the_same_gradients(monkeypatch, cfa, size):
    """UNEVEN_CLASSES_SPREAD (more backward blocks a class when the classes
    are unequal: X-Trans's 4 : 1 : 4) and BALANCED_CLASSES (one wave the
    classes share by their rows: kernels/mlp_bwd_wgmma.cuh block_of_group)
    move only where the blocks' partial weight gradients are cut: dU the
    same bits (the same tiles), dw equal within float32 summation; Bayer's
    equal classes keep one spread.  "rows": a class has more tiles than
    blocks; "tiny": 80 rows, a tile a class, most blocks without one."""
    from kpnt.ops._cuda import front_level

    N, H, W = size
    x, U, S, noise = inputs(cfa, N, H, W, seed=5)
    sets = weight_sets(cfa.n_classes, seed=6)
    flat = [w for ws in sets for w in ws]
    gO = torch.randn(N, 3, H, W, device="cuda")
    spreads = []
    real = front_level._spread
    monkeypatch.setattr(front_level, "_spread", lambda p: spreads.append(real(p)) or spreads[-1])
    got = {}
    for name, spread, balanced in [("one", 1, False), ("spread", 4, False), ("balanced", 1, True)]:
        monkeypatch.setattr(front_level, "UNEVEN_CLASSES_SPREAD", spread)
        monkeypatch.setattr(front_level, "BALANCED_CLASSES", balanced)
        O = _cuda.fused_front_level(x, U, S, noise, cfa, sets, SPEC)
        got[name] = torch.autograd.grad(O, [U, *flat], gO)
    assert spreads == ([1, 4, 0] if cfa.kind == "xtrans" else [1, 1, 1])
    for name in ("spread", "balanced"):
        assert torch.equal(got["one"][0], got[name][0]), name
        for a, b in zip(got["one"][1:], got[name][1:]):
            assert rel(b, a) < 1e-6, (name, rel(b, a))
    with pytest.raises(ValueError, match="spread must be in 0..64"):
        from kpnt.ops._cuda.extension import ext, unwrap

        unwrap(ext().front_backward(x, U.detach(), S, noise, torch.zeros(1, device="cuda"), [], O.detach(), gO, [],
                                    [], SLOPE, False, False, [], False, 65))
