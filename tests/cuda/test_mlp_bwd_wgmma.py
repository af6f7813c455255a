"""The MLP backward on Hopper's wgmma kernel (kernels/mlp_bwd_wgmma.cuh)
against the f16-rounding float64 reference, the exact one and the mma.sync
backward, plain and grouped, on every trainable 64-wide shape; the switch's
choice of kernel."""
import pytest
import torch

from kpnt.ops import _cuda
from kpnt.ops._cuda import mlp as mlp_op
from kpnt.testing import TOLERANCES, grad_vs_exact_bound
from kpnt.testing import rel_error as rel

from test_fused_mlp import CONFIGS, SLOPE, features, poison, ref_mlp_f16, reference_grads, weights
from test_mlp_wgmma import launched_kernels, needs_wgmma  # noqa: F401 (a fixture)

pytestmark = pytest.mark.cuda

TOL_GRAD = TOLERANCES["grad"]
#: Every trainable shape the wgmma backward is compiled for (WgBwd::shape_ok).
CONFIGS_BWD = [d for d in CONFIGS
               if d[1] == 64 and d[0] in mlp_op.WGMMA_BACKWARD_WIDTHS and d[2] in mlp_op.WGMMA_BACKWARD_WIDTHS]


def gradients(x, ws, gy, monkeypatch, on, grouped=None):
    """(dL/dx, dL/dW...) with the wgmma backward switched on or off, on memory filled with NaN first."""
    monkeypatch.setattr(mlp_op, "WGMMA_BACKWARD", on)
    poison()
    y = _cuda.fused_mlp(x, ws, SLOPE) if grouped is None else _cuda.fused_mlp_grouped(x, grouped, ws, SLOPE)
    inputs = [x, *ws] if x.requires_grad else list(ws)
    return torch.autograd.grad(y, inputs, gy)


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS_BWD, ids=lambda d: "x".join(map(str, d)))
@pytest.mark.parametrize("P", [1, 63, 65, 127, 129, 20_011, 300_007])
def test_wgmma_backward_matches_references_and_mma(dims, P, monkeypatch):
    """One row, partial tiles of either warp group (63, 65, 127, 129 rows), and
    more tiles than resident blocks (300 007: each block goes round its loop)."""
    ws = weights(dims, seed=P)
    x = features(P, dims[0], seed=P + 1).requires_grad_()
    gy = torch.randn(P, dims[2], device="cuda")
    exact, ref16 = reference_grads(x, ws, gy)
    fast = gradients(x, ws, gy, monkeypatch, True)
    mma = gradients(x, ws, gy, monkeypatch, False)
    for i, (a, m, b, c) in enumerate(zip(fast, mma, ref16, exact)):
        name = "x" if i == 0 else f"weights[{i - 1}]"
        assert torch.isfinite(a).all(), name
        assert rel(a, b) < TOL_GRAD, name
        assert rel(a, c) <= grad_vs_exact_bound(rel(a, b), rel(b, c)), name
        # The same f16 operands and tile scaling as mma.sync: only f32 summation orders differ.
        assert rel(a, m) < TOL_GRAD, name


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS_BWD, ids=lambda d: "x".join(map(str, d)))
def test_every_weight_moves_its_own_gradient(dims, monkeypatch):
    """A layout error that swapped or transposed blocks of one dW would still
    leave its norm: each matrix's gradient is compared element by element with
    mma.sync's, and the largest element error is bounded."""
    ws = weights(dims, seed=31)
    x = features(4_099, dims[0], seed=32)
    gy = torch.randn(4_099, dims[2], device="cuda")
    fast = gradients(x, ws, gy, monkeypatch, True)
    mma = gradients(x, ws, gy, monkeypatch, False)
    for i, (a, m) in enumerate(zip(fast, mma)):
        assert (a - m).abs().max() <= 2e-2 * m.abs().max(), f"weights[{i}]"


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("dims", CONFIGS_BWD, ids=lambda d: "x".join(map(str, d)))
@pytest.mark.parametrize("G,P,used", [(3, 9_001, 3), (4, 70_001, 3)], ids=["3-groups", "empty-group-many-tiles"])
def test_grouped_wgmma_backward_matches_per_class(dims, G, P, used, monkeypatch):
    """Uneven groups; and a group with no rows beside groups of more tiles
    than a group's blocks (each block goes round its loop), whose weight
    gradient must be exactly zero."""
    check_grouped_per_class(dims, G, P, used, (7, 8, 10), True, monkeypatch)


def check_grouped_per_class(dims, G, P, used, seeds, on, monkeypatch):
    """G weight sets over P rows of classes 0 .. used - 1 (uneven), the
    backward's wgmma switch ``on`` or off: the gradient of each set without
    rows is exactly zero, each other set's is the f16-rounding reference's on
    its own rows.  ``seeds``: of the weights, the rows and the classes."""
    ws = weights(dims, groups=G, seed=seeds[0])
    x = features(P, dims[0], seed=seeds[1])
    cls = torch.randint(0, used, (P,), generator=torch.Generator().manual_seed(seeds[2])).cuda()
    cls[:5] = used - 1  # an uneven split
    gy = torch.randn(P, dims[2], device="cuda")
    g = gradients(x, ws, gy, monkeypatch, on, grouped=cls)
    for c in range(used, G):
        assert all(torch.equal(a[c], torch.zeros_like(a[c])) for a in g), f"group {c} has no rows"
    for c in range(used):
        idx = (cls == c).nonzero().squeeze(1)
        wc = [w[c].detach().double().requires_grad_() for w in ws]
        rg = torch.autograd.grad(ref_mlp_f16(x[idx].double(), wc), wc, gy[idx].double())
        for i, (a, b) in enumerate(zip(g, rg)):
            assert rel(a[c], b) < TOL_GRAD, (c, i)


@pytest.mark.usefixtures("needs_wgmma")
def test_tiny_and_subnormal_gradients(monkeypatch):
    """The tile's power-of-two scaling (scale_tile_dy, shared with mma.sync):
    dL/dy far below f16's range, and all-subnormal tiles, give finite weight
    gradients of the same precision."""
    dims = CONFIGS_BWD[0]
    ws = weights(dims, seed=13)
    x = features(1031, dims[0], seed=14)
    gy = torch.randn(1031, dims[2], device="cuda")
    gy[::7] = 0.0
    big = gradients(x, ws, gy, monkeypatch, True)
    for tiny in (1e-10, 2.0 ** -136):
        small = gradients(x, ws, gy * tiny, monkeypatch, True)
        for i, (a, b) in enumerate(zip(small, big)):
            assert torch.isfinite(a).all() and a.abs().max() > 0, (tiny, i)
            assert rel(a.double() / tiny, b.double()) < TOL_GRAD, (tiny, i)


@pytest.mark.usefixtures("needs_wgmma")
def test_deterministic(monkeypatch):
    dims = CONFIGS_BWD[0]
    ws = weights(dims, seed=5)
    x = features(10_007, dims[0], seed=6)
    gy = torch.randn(10_007, dims[2], device="cuda")
    runs = [gradients(x, ws, gy, monkeypatch, True) for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("switch", [True, False])
def test_the_switch_picks_the_kernel_that_runs(switch, monkeypatch):
    monkeypatch.setattr(mlp_op, "WGMMA_BACKWARD", switch)
    dims = CONFIGS_BWD[0]
    ws = weights(dims, seed=1)
    x = features(1_000, dims[0], seed=2)
    gy = torch.randn(1_000, dims[2], device="cuda")
    y = _cuda.fused_mlp(x, ws, SLOPE)
    names = launched_kernels(lambda: torch.autograd.grad(y, ws, gy))
    assert any("mlp_bwd_wgmma_kernel" in n for n in names) == switch, names
    assert any("mlp_bwd_kernel" in n for n in names) == (not switch), names


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("offset", [1, 2], ids=["4-bytes", "8-bytes"])
def test_misaligned_views_are_copied_not_faulted(offset, monkeypatch):
    """The kernels read x and dL/dy 8 bytes at a time and the wgmma backward
    stages them with 16-byte copies: views at an offset of one or two floats
    are copied to aligned memory by the binding (forward and backward), and
    the results are those of the aligned tensors."""
    dims = CONFIGS_BWD[0]
    ws = weights(dims, seed=41)
    P = 1_000
    base = features(P + 1, dims[0], seed=42).reshape(-1)
    x = base[offset:offset + P * dims[0]].view(P, dims[0])
    gbase = torch.randn(P * dims[2] + offset, device="cuda")
    gy = gbase[offset:].view(P, dims[2])
    assert x.data_ptr() % 16 and gy.data_ptr() % 16
    with torch.no_grad():
        assert torch.equal(_cuda.fused_mlp(x, ws, SLOPE), _cuda.fused_mlp(x.clone(), ws, SLOPE))
    got = gradients(x, ws, gy, monkeypatch, True)
    want = gradients(x.clone(), ws, gy.clone(), monkeypatch, True)
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_use_wgmma_backward_asks_for_width_64_and_its_widths(monkeypatch):
    """Neither the switch off nor a shape without the kernel asks for it (no GPU query needed for those)."""
    x = torch.zeros(4, 32, device="cuda")
    assert not mlp_op.use_wgmma_backward(x, [32, 64, 16, 6], switch=False)
    assert not mlp_op.use_wgmma_backward(x, [32, 96, 16, 6], switch=True)
    assert not mlp_op.use_wgmma_backward(x, [32, 64, 80, 4], switch=True)
    assert not mlp_op.use_wgmma_backward(x, [48, 64, 16, 4], switch=True)


def colour_grads_on_off(dims, mode, size, kernel, monkeypatch):
    """The colour level's weight gradients with WGMMA_BACKWARD on and off
    (``{on: grads}``, NaN-filled memory first), asserting that the kernel
    named ``kernel`` runs exactly when the switch is on."""
    from test_colour_level import inputs, spec
    from test_colour_level import weights as colour_weights

    cw = colour_weights(1, mode, dims)
    D, var = inputs(*size, seed=3)
    sp = spec(mode, True, dims)
    gI = torch.randn_like(D)
    out = {}
    for on in (True, False):
        monkeypatch.setattr(mlp_op, "WGMMA_BACKWARD", on)
        poison()
        I, _ = _cuda.fused_colour_level(D, var, cw, sp)
        names = launched_kernels(lambda: out.__setitem__(on, torch.autograd.grad(I, cw, gI)))
        assert any(kernel in n for n in names) == on, names
    return out


def front_grads_on_off(shape, width, cfa_name, size, kernel, monkeypatch):
    """The front level's gradients (dL/dU, then every class's weights) with
    WGMMA_BACKWARD on and off, as :func:`colour_grads_on_off`."""
    from test_front_level import inputs, weight_sets

    from kpnt.mosaic.cfa import CFA
    from kpnt.spec import FrontLevelSpec

    cfa = {"bayer": CFA.bayer("GRBG"), "xtrans": CFA.xtrans(), "xtrans25": CFA.xtrans(2, 5)}[cfa_name]
    spec = FrontLevelSpec(radius=shape.key[0], kernels="shared" if shape.key[1] == 1 else "per_channel",
                          width=width, hidden_layers=shape.mlp.n_hidden, leaky_slope=SLOPE)
    N, H, W = size
    x, U, S, noise = inputs(cfa, N, H, W, seed=H * W)
    sets = weight_sets(cfa.n_classes, seed=W, spec=spec)
    flat = [w for ws in sets for w in ws]
    gO = torch.randn(N, 3, H, W, device="cuda")
    out = {}
    for on in (True, False):
        monkeypatch.setattr(mlp_op, "WGMMA_BACKWARD", on)
        poison()
        O = _cuda.fused_front_level(x, U, S, noise, cfa, sets, spec)
        names = launched_kernels(lambda: out.__setitem__(on, torch.autograd.grad(O, [U, *flat], gO)))
        assert any(kernel in n for n in names) == on, names
    return out


def assert_same_up_to_order(out, first="weights[0]"):
    """The wgmma gradients are finite and mma.sync's up to f32 summation order."""
    for i, (a, b) in enumerate(zip(out[True], out[False])):
        name = first if i == 0 else f"grads[{i}]"
        assert torch.isfinite(a).all() and rel(a, b) < TOL_GRAD, name


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("mode", ["softmax", "plain"])
@pytest.mark.parametrize("size", [(1, 9, 13), (2, 61, 67), (1, 150, 160)], ids=str)
def test_colour_level_backward_on_wgmma(mode, size, monkeypatch):
    """The colour level's weight gradient (its gather-input and
    kernel-application gradient policies, R = 1 row block a warp) with the
    switch on: the wgmma kernel runs, and the gradient is mma.sync's up to f32
    summation order.  150 x 160 pixels are more tiles than an H100's blocks:
    blocks go round their loop (the unstaged path's tile-to-tile hand-over)."""
    from test_mlp_wgmma import COLOUR64

    if not COLOUR64:
        pytest.skip("no colour line with a 64-wide MLP compiled")
    assert_same_up_to_order(colour_grads_on_off(COLOUR64[0], mode, size, "mlp_bwd_wgmma_kernel", monkeypatch))


@pytest.mark.usefixtures("needs_wgmma")
@pytest.mark.parametrize("cfa_name,size", [("bayer", (2, 23, 31)), ("xtrans", (1, 3, 4)), ("xtrans25", (1, 301, 517))],
                         ids=lambda v: str(v))
def test_front_level_backward_on_wgmma(cfa_name, size, monkeypatch):
    """The front level's gradients (weights of every class, and dL/dU through
    the MLP's input gradient) with the switch on: the wgmma kernel runs, and
    the gradients are mma.sync's up to f32 summation order."""
    from test_mlp_wgmma import FRONT64

    shapes = [s for s in FRONT64 if s.mlp.n_in in mlp_op.WGMMA_BACKWARD_WIDTHS]
    if not shapes:
        pytest.skip("no front line the wgmma backward runs")
    out = front_grads_on_off(shapes[0], 64, cfa_name, size, "mlp_bwd_wgmma_kernel", monkeypatch)
    assert_same_up_to_order(out, first="U")
