"""The projection guide's training path on the fused backend
(kpnt.ops._cuda.guide_train): the two elementwise kernels against PyTorch's
arithmetic, the whole network against float64 autograd (float32) and
against autograd's bfloat16 path (bfloat16), the model routing its guide
there, and a captured training step equal to the eager one; the fused
projection forward and backward (bfloat16) against float64 and against
the unfused path."""
import pytest
import torch

from kpnt.ops._cuda import guide_train
from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ref.guide import _network, guide_channels
from kpnt.testing import rel_error as rel

from test_guide_backward import trained_like

pytestmark = pytest.mark.cuda


def activations(shape, dtype, seed, positive=False):
    g = torch.Generator("cuda").manual_seed(seed)
    t = torch.randn(shape, device="cuda", generator=g)
    if positive:
        t = t.relu()                           # a ReLU output: about half zeros
    return t.to(dtype).contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("C", [64, 128, 24])
def test_bias_relu_matches_float32_arithmetic(dtype, C):
    shape = (2, C, 37, 45)                     # rows not a multiple of a block's
    a, z = activations(shape, dtype, 1), activations(shape, dtype, 2)
    bias = torch.randn(C, device="cuda")
    for res in (None, z):
        want = a.float() + bias[:, None, None]
        want = (want if res is None else want + res.float()).clamp_min(0).to(dtype)
        got = a.clone()
        unwrap(ext().guide_bias_relu_(got, bias, res))
        assert torch.equal(got, want), (dtype, C, res is None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["f32", "bf16"])
@pytest.mark.parametrize("C", [64, 128, 24])
def test_relu_grad_sum_matches_float32_arithmetic(dtype, C):
    shape = (3, C, 41, 29)
    g, p, y = activations(shape, dtype, 3), activations(shape, dtype, 4), activations(shape, dtype, 5, positive=True)
    for q in (None, p):
        t = g.float() if q is None else g.float() + q.float()
        want = torch.where(y > 0, t, torch.zeros(())).to(dtype)
        gm, sums = unwrap(ext().guide_relu_grad_sum(g, q, y))
        assert gm.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(gm, want), (dtype, C, q is None)
        exact = want.double().sum((0, 2, 3))
        assert sums.dtype == torch.float32 and rel(sums, exact) < 1e-5
    again = unwrap(ext().guide_relu_grad_sum(g, p, y))[1]
    assert torch.equal(again, unwrap(ext().guide_relu_grad_sum(g, p, y))[1])    # a fixed order


@pytest.mark.parametrize("C", [32, 64, 128])
def test_proj_backward_matches_float64(C):
    """The fused projection backward: gm exactly PyTorch's float32 arithmetic
    rounded once, gh the float64 product rounded once (float32 accumulation:
    within a bfloat16 rounding and a float32 sum's error), the sums and dP
    float64's within float32 accumulation; a fixed summation order."""
    bf = torch.bfloat16
    shape = (2, C, 23, 31)                     # 1426 rows: no multiple of any tile
    g, p = activations(shape, bf, 6), activations(shape, bf, 7)
    y, h = activations(shape, bf, 8, positive=True), activations(shape, bf, 9, positive=True)
    P = (torch.randn(C, C, 1, 1, device="cuda", generator=torch.Generator("cuda").manual_seed(10))
         / C ** 0.5).to(bf)
    rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, C).double()
    for q in (None, p):
        t = g.float() if q is None else g.float() + q.float()
        want_gm = torch.where(y > 0, t, torch.zeros(())).to(bf)
        gm, gh, dc, db, dP = unwrap(ext().guide_proj_backward(g, q, y, h, P))
        assert gm.is_contiguous(memory_format=torch.channels_last) and gh.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(gm, want_gm), (C, q is None)
        Pm = P.double().reshape(C, C)
        dh = rows(gm) @ Pm                     # dh[m, i] = sum_o gm[m, o] P[o, i]
        mask = rows(h) > 0
        want_gh = torch.where(mask, dh, torch.zeros((), dtype=torch.float64))
        bound = 2.0 ** -8 * want_gh.abs() + 1e-5 * (rows(gm).abs() @ Pm.abs())
        assert ((rows(gh) - want_gh).abs() <= bound).all(), (C, q is None, (rows(gh) - want_gh).abs().max())
        assert (rows(gh)[~mask] == 0).all()
        assert dc.dtype == db.dtype == dP.dtype == torch.float32 and dP.shape == (C, C, 1, 1)
        assert rel(dc, rows(gm).sum(0)) < 1e-5 and rel(db, rows(gh).sum(0)) < 1e-5
        assert rel(dP.reshape(C, C), rows(gm).T @ rows(h)) < 1e-5, (C, q is None)
    again = unwrap(ext().guide_proj_backward(g, p, y, h, P))
    assert all(torch.equal(a, b) for a, b in zip(again, unwrap(ext().guide_proj_backward(g, p, y, h, P))))


@pytest.mark.parametrize("C", [32, 64, 128])
def test_proj_forward_matches_float64(C):
    """The fused projection forward relu(h P^T + c + z): the float64 value
    rounded once to bfloat16 (float32 accumulation: within a bfloat16
    rounding and a float32 sum's error), zeros exactly where it is negative;
    a rerun gives the same bits."""
    bf = torch.bfloat16
    shape = (2, C, 23, 31)                     # 1426 rows: no multiple of any tile
    h, z = activations(shape, bf, 11, positive=True), activations(shape, bf, 12, positive=True)
    gen = torch.Generator("cuda").manual_seed(13)
    P = (torch.randn(C, C, 1, 1, device="cuda", generator=gen) / C ** 0.5).to(bf)
    c = torch.randn(C, device="cuda", generator=gen)
    rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, C).double()
    out = unwrap(ext().guide_proj_forward(h, P, c, z))
    assert out.dtype == bf and out.shape == shape and out.is_contiguous(memory_format=torch.channels_last)
    Pm = P.double().reshape(C, C)
    exact = rows(h) @ Pm.T + c.double() + rows(z)        # out[m, o] = sum_i h[m, i] P[o, i] + c[o] + z[m, o]
    want = exact.clamp_min(0)
    bound = 2.0 ** -8 * want.abs() + 1e-5 * (rows(h).abs() @ Pm.abs().T + c.double().abs() + rows(z).abs())
    assert ((rows(out) - want).abs() <= bound).all(), (C, (rows(out) - want).abs().max())
    assert (rows(out)[exact < -bound] == 0).all() and (rows(out) >= 0).all()
    assert torch.equal(out, unwrap(ext().guide_proj_forward(h, P, c, z)))


PROJECTION_KERNELS = ("guide_proj_forward", "guide_proj_backward")


def spy_on_projection_kernels(monkeypatch, names=PROJECTION_KERNELS) -> list:
    """The names of the projection kernels' calls (or of other ``names``)
    through kpnt.ops._cuda.guide_train, in order, as they happen."""
    real, calls = ext(), []

    class Spy:
        def __getattr__(self, name):
            f = getattr(real, name)
            return (lambda *a: calls.append(name) or f(*a)) if name in names else f

    monkeypatch.setattr(guide_train, "ext", lambda: Spy())
    return calls


def tf32(t):
    """t rounded to TF32 (10 mantissa bits; to nearest, as the kernels' cvt.rna, ties aside)."""
    b = t.float().contiguous().view(torch.int32)
    return ((b + 0x1000) & ~0x1FFF).view(torch.float32)


#: Sizes of the float32 twins' checks: partial last tiles at every width; at
#: 128 (backward tiles of 64 rows, one block an SM) more tiles than an H100's
#: 132 SMs, so that blocks take a second tile.
TF32_CASES = [(32, (2, 32, 23, 31)), (64, (2, 64, 23, 31)), (128, (2, 128, 67, 71))]


@pytest.mark.parametrize("C, shape", TF32_CASES, ids=[f"C{c}" for c, _ in TF32_CASES])
def test_proj_forward_tf32_matches_float64(C, shape):
    """The float32 twin (written in session 33 after its last GPU call; width
    128 in session 34): relu(h P^T + c + z) with the product on TF32
    (operands rounded to 10 mantissa bits, float32 accumulation), float64's
    value of the rounded operands within the tensor cores' float32
    accumulation (3e-5 of the sum of magnitudes: a wrong element is off by
    its whole size); a rerun gives the same bits."""
    h, z = activations(shape, torch.float32, 21, positive=True), activations(shape, torch.float32, 22)
    gen = torch.Generator("cuda").manual_seed(23)
    P = torch.randn(C, C, 1, 1, device="cuda", generator=gen) / C ** 0.5
    c = torch.randn(C, device="cuda", generator=gen)
    rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, C).double()
    out = unwrap(ext().guide_proj_forward(h, P, c, z))
    assert out.dtype == torch.float32 and out.is_contiguous(memory_format=torch.channels_last)
    Pm = P.double().reshape(C, C)
    want = (rows(tf32(h)) @ tf32(Pm).double().T + c.double() + rows(z)).clamp_min(0)
    bound = 3e-5 * (rows(h).abs() @ Pm.abs().T + c.double().abs() + rows(z).abs())
    assert ((rows(out) - want).abs() <= bound).all(), (C, (rows(out) - want).abs().max())
    assert torch.equal(out, unwrap(ext().guide_proj_forward(h, P, c, z)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "tf32"])
@pytest.mark.parametrize("C, shape", TF32_CASES, ids=[f"C{c}" for c, _ in TF32_CASES])
def test_proj_forward_prologue_is_bias_relu_then_proj_forward(C, shape, dtype):
    """With h_bias the projection forward takes the 3x3's raw output and
    leaves in it what guide_bias_relu_ would, then returns what the plain
    projection forward returns on that h: bit for bit (written in session 35
    after its last GPU call)."""
    a, z = activations(shape, dtype, 31), activations(shape, dtype, 32, positive=True)
    gen = torch.Generator("cuda").manual_seed(33)
    P = (torch.randn(C, C, 1, 1, device="cuda", generator=gen) / C ** 0.5).to(dtype)
    c, b = torch.randn(C, device="cuda", generator=gen), torch.randn(C, device="cuda", generator=gen)
    h_unfused = a.clone(memory_format=torch.channels_last)
    unwrap(ext().guide_bias_relu_(h_unfused, b, None))
    want = unwrap(ext().guide_proj_forward(h_unfused, P, c, z))
    h = a.clone(memory_format=torch.channels_last)
    got = unwrap(ext().guide_proj_forward(h, P, c, z, b))
    assert (h_unfused == 0).any() and (h_unfused > 0).any()          # the ReLU cut somewhere, not everywhere
    assert torch.equal(h, h_unfused) and torch.equal(got, want)
    with pytest.raises(ValueError, match="h_bias must be"):
        unwrap(ext().guide_proj_forward(h, P, c, z, b[:-1]))
    with pytest.raises(ValueError, match="h_bias must be"):
        unwrap(ext().guide_proj_forward(h, P, c, z, b.double()))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "tf32"])
@pytest.mark.parametrize("period, width, layers, size", [(2, 64, 5, (2, 37, 45)), (6, 128, 3, (2, 19, 23))],
                         ids=["bayer", "xtrans"])
def test_network_with_the_forward_prologue_is_the_same_network(monkeypatch, period, width, layers, size, dtype):
    """FUSED_PROJ_PROLOGUE: each projection block's 3x3 epilogue moves into
    the projection kernel (one guide_bias_relu_ call left: layer 0's), and
    the network's output and gradients are the same bits (float32 with
    cuDNN's TF32 on, as training runs it; cuDNN's deterministic algorithms,
    so that only the prologue could make a difference)."""
    z, ws, gout = network_case(period, width, layers, size, seed=15)
    monkeypatch.setattr(guide_train, "TF32_WIDTHS", guide_train.PROJ_WIDTHS)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(guide_train, "FUSED_PROJ_PROLOGUE", False)
    out0, grads0 = fused_network_grads(z, ws, gout, dtype)
    calls = spy_on_projection_kernels(monkeypatch, ("guide_bias_relu_", "guide_proj_forward"))
    monkeypatch.setattr(guide_train, "FUSED_PROJ_PROLOGUE", True)
    out1, grads1 = fused_network_grads(z, ws, gout, dtype)
    assert calls == ["guide_bias_relu_"] + ["guide_proj_forward"] * (layers - 1)
    assert torch.equal(out1, out0)
    for i, (a, b) in enumerate(zip(grads1, grads0)):
        assert torch.equal(a, b), (i, rel(a, b))


@pytest.mark.parametrize("C, shape", TF32_CASES, ids=[f"C{c}" for c, _ in TF32_CASES])
def test_proj_backward_tf32_matches_float64(C, shape):
    """The float32 twin of the projection backward: gm bit for bit PyTorch's
    float32 arithmetic, gh the TF32 product (gm and P rounded) masked by
    h > 0, the sums float64's of the stored values, dP gm^T h on TF32
    (both rounded), each within float32 accumulation; a fixed order.  At
    width 128 each warp computes half the columns of dh (tiles of half the
    rows): a wrong half would put whole columns off."""
    g, p = activations(shape, torch.float32, 24), activations(shape, torch.float32, 25)
    y, h = activations(shape, torch.float32, 26, positive=True), activations(shape, torch.float32, 27, positive=True)
    P = torch.randn(C, C, 1, 1, device="cuda", generator=torch.Generator("cuda").manual_seed(28)) / C ** 0.5
    rows = lambda t: t.permute(0, 2, 3, 1).reshape(-1, C).double()
    for q in (None, p):
        want_gm = torch.where(y > 0, g if q is None else g + q, torch.zeros(()))
        gm, gh, dc, db, dP = unwrap(ext().guide_proj_backward(g, q, y, h, P))
        assert torch.equal(gm, want_gm), (C, q is None)
        Pm = P.double().reshape(C, C)
        dh = rows(tf32(gm)) @ tf32(Pm).double()
        mask = rows(h) > 0
        want_gh = torch.where(mask, dh, torch.zeros((), dtype=torch.float64))
        bound = 3e-5 * (rows(gm).abs() @ Pm.abs())
        assert ((rows(gh) - want_gh).abs() <= bound).all(), (C, q is None, (rows(gh) - want_gh).abs().max())
        assert (rows(gh)[~mask] == 0).all()
        assert rel(dc, rows(gm).sum(0)) < 1e-5 and rel(db, rows(gh).sum(0)) < 1e-5
        want_dP = rows(tf32(gm)).T @ rows(tf32(h))
        bound_dP = 3e-5 * (rows(gm).abs().T @ rows(h).abs())
        assert ((dP.reshape(C, C).double() - want_dP).abs() <= bound_dP).all(), (C, q is None)
    again = unwrap(ext().guide_proj_backward(g, p, y, h, P))
    assert all(torch.equal(a, b) for a, b in zip(again, unwrap(ext().guide_proj_backward(g, p, y, h, P))))


@pytest.mark.parametrize("period, width, size", [(2, 64, (2, 37, 45)), (6, 128, (2, 47, 53))],
                         ids=["bayer", "xtrans"])
def test_float32_network_runs_the_tf32_twins_only_when_switched_on_with_tf32(monkeypatch, period, width, size):
    """With FUSED_PROJ_TF32 and cuDNN's TF32 on, a float32 guide of a routed
    width (64: the shipped Bayer guide; 128, the X-Trans one, routed here
    by hand: its backward is new in session 34) runs its projection blocks
    on the float32 twins, and its gradients are as close to float64's as
    the unfused TF32 path's; with TF32 off (or the switch off) it keeps the
    exact float32 passes."""
    z, ws, gout = network_case(period, width, 4, size, seed=14)
    calls = spy_on_projection_kernels(monkeypatch)
    monkeypatch.setattr(guide_train, "TF32_WIDTHS", guide_train.PROJ_WIDTHS)
    monkeypatch.setattr(guide_train, "FUSED_PROJ_TF32", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)
    out, fused = fused_network_grads(z, ws, gout, torch.float32)
    assert sorted(calls) == sorted(3 * list(PROJECTION_KERNELS))
    monkeypatch.setattr(guide_train, "FUSED_PROJ_TF32", False)
    out2, unfused = fused_network_grads(z, ws, gout, torch.float32)
    assert len(calls) == 6
    ref, ref_g = float64_network(z, ws, gout)
    assert rel(out.double(), ref) < 2 * rel(out2.double(), ref) + 1e-5
    for i, (a, b, c) in enumerate(zip(fused, unfused, ref_g)):
        assert rel(a.double(), c) < 2 * rel(b.double(), c) + 1e-5, (i, rel(a.double(), c), rel(b.double(), c))
    monkeypatch.setattr(guide_train, "FUSED_PROJ_TF32", True)
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    guide_train.fused_guide_network(z, ws, torch.float32)
    assert len(calls) == 6                     # TF32 off: the exact passes


def test_proj_forward_bad_input_raises_one_line():
    a = activations((1, 64, 5, 7), torch.bfloat16, 1)
    P = torch.zeros(64, 64, 1, 1, device="cuda", dtype=torch.bfloat16)
    c = torch.zeros(64, device="cuda")
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        unwrap(ext().guide_proj_forward(a.half(), P.half(), c, a.half()))
    with pytest.raises(ValueError, match="P must be"):
        unwrap(ext().guide_proj_forward(a, P.float(), c, a))             # P in another dtype than the activations
    with pytest.raises(ValueError, match="P must be"):
        unwrap(ext().guide_proj_forward(a.float(), P, c, a.float()))
    with pytest.raises(ValueError, match="bias must be"):
        unwrap(ext().guide_proj_forward(a, P, c[:32], a))
    with pytest.raises(ValueError, match="the second operand"):
        unwrap(ext().guide_proj_forward(a, P, c, a[..., :6]))
    b = activations((1, 48, 5, 7), torch.bfloat16, 1)
    with pytest.raises(ValueError, match="32, 64 or 128"):
        unwrap(ext().guide_proj_forward(b, torch.zeros(48, 48, 1, 1, device="cuda", dtype=torch.bfloat16),
                                        torch.zeros(48, device="cuda"), b))


def test_proj_backward_bad_input_raises_one_line():
    a = activations((1, 64, 5, 7), torch.bfloat16, 1)
    P = torch.zeros(64, 64, 1, 1, device="cuda", dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        unwrap(ext().guide_proj_backward(a.half(), None, a.half(), a.half(), P.half()))
    with pytest.raises(ValueError, match="P must be"):
        unwrap(ext().guide_proj_backward(a.float(), None, a.float(), a.float(), P))
    f = activations((1, 48, 5, 7), torch.float32, 1)
    with pytest.raises(ValueError, match="32, 64 or 128"):
        unwrap(ext().guide_proj_backward(f, None, f, f, torch.zeros(48, 48, 1, 1, device="cuda")))
    with pytest.raises(ValueError, match="32, 64 or 128"):
        unwrap(ext().guide_proj_forward(f, torch.zeros(48, 48, 1, 1, device="cuda"), torch.zeros(48, device="cuda"), f))
    with pytest.raises(ValueError, match="P must be"):
        unwrap(ext().guide_proj_backward(a, None, a, a, P[:32]))
    b = activations((1, 48, 5, 7), torch.bfloat16, 1)
    with pytest.raises(ValueError, match="32, 64 or 128"):
        unwrap(ext().guide_proj_backward(b, None, b, b, torch.zeros(48, 48, 1, 1, device="cuda", dtype=torch.bfloat16)))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "tf32"])
def test_proj_backward_writes_its_unreduced_sums_where_asked(dtype):
    """With ``partial_out`` the projection backward returns only (gm, gh),
    the same bits as without, and leaves in ``partial_out`` the partial rows
    whose column sums are the (dc, db, dP) it returns without: bit for bit,
    as the same reduction of the same rows."""
    C, shape = 64, (2, 64, 23, 31)
    g, p = activations(shape, dtype, 6), activations(shape, dtype, 7)
    y, h = activations(shape, dtype, 8, positive=True), activations(shape, dtype, 9, positive=True)
    P = (torch.randn(C, C, 1, 1, device="cuda", generator=torch.Generator("cuda").manual_seed(10)) / 8).to(dtype)
    gm, gh, dc, db, dP = unwrap(ext().guide_proj_backward(g, p, y, h, P))
    rows = unwrap(ext().guide_proj_partial_rows(g))
    partial = torch.full((rows, 2 * C + C * C), float("nan"), device="cuda")
    out = unwrap(ext().guide_proj_backward(g, p, y, h, P, partial))
    assert len(out) == 2 and torch.equal(out[0], gm) and torch.equal(out[1], gh)
    assert torch.equal(partial.sum(0), torch.cat([dc, db, dP.reshape(-1)]))       # every row written: no NaN left
    with pytest.raises(ValueError, match="partial_out must be"):
        unwrap(ext().guide_proj_backward(g, p, y, h, P, partial[1:]))
    with pytest.raises(ValueError, match="partial_out must be"):
        unwrap(ext().guide_proj_backward(g, p, y, h, P, partial.double()))


@pytest.mark.parametrize("period, width, layers, size", [(2, 64, 5, (2, 37, 45)), (6, 128, 3, (2, 19, 23))],
                         ids=["bayer", "xtrans"])
def test_deferred_sums_give_the_per_block_reductions_gradients(monkeypatch, period, width, layers, size):
    """The network's backward with the projection blocks' sums reduced once
    at its end (DEFER_SUMS) gives the gradients of one reduction a block
    (the same partial rows summed in another launch: equal within float32's
    summation error), and really defers: each projection block's backward
    asks for its partial rows' count first (only the deferred path does) and
    hands the kernel a slot to write them to."""
    z, ws, gout = network_case(period, width, layers, size, seed=14)
    monkeypatch.setattr(guide_train, "DEFER_SUMS", False)
    _, per_block = fused_network_grads(z, ws, gout, torch.bfloat16)
    calls = spy_on_projection_kernels(monkeypatch, ("guide_proj_partial_rows", "guide_proj_backward"))
    monkeypatch.setattr(guide_train, "DEFER_SUMS", True)
    _, deferred = fused_network_grads(z, ws, gout, torch.bfloat16)
    assert calls == ["guide_proj_partial_rows", "guide_proj_backward"] * (layers - 1)
    for i, (a, b) in enumerate(zip(deferred, per_block)):
        assert a.shape == b.shape and a.dtype == b.dtype, i
        assert rel(a, b) < 1e-6, (i, rel(a, b))


def test_bfloat16_network_runs_the_fused_projection_kernels(monkeypatch):
    """A bfloat16 guide of width 64 runs each projection block's 1x1
    convolution forward and its backward on the fused kernels, and its
    output and gradients are as close to float64's as the unfused path's
    (cuDNN's GEMMs and the passes around them) are: both are bfloat16, whose
    gradients differ from each other and from float64 by several per cent
    (rounding flips ReLU masks; session 33 measured 7.8 % between the two
    paths for the input's gradient); a wrong kernel is off by far more."""
    z, ws, gout = network_case(2, 64, 4, (2, 37, 45), seed=13)
    calls = spy_on_projection_kernels(monkeypatch)
    monkeypatch.setattr(guide_train, "FUSED_PROJ_FORWARD", True)
    monkeypatch.setattr(guide_train, "FUSED_PROJ_BACKWARD", True)
    out, fused = fused_network_grads(z, ws, gout, torch.bfloat16)
    assert sorted(calls) == sorted(3 * list(PROJECTION_KERNELS))     # 4 layers: 3 projection blocks
    monkeypatch.setattr(guide_train, "FUSED_PROJ_FORWARD", False)
    monkeypatch.setattr(guide_train, "FUSED_PROJ_BACKWARD", False)
    out2, unfused = fused_network_grads(z, ws, gout, torch.bfloat16)
    assert len(calls) == 6
    ref, ref_g = float64_network(z, ws, gout)
    assert rel(out.double(), ref) < 2 * rel(out2.double(), ref) + 1e-3
    for i, (a, b, c) in enumerate(zip(fused, unfused, ref_g)):
        assert a.shape == b.shape and torch.isfinite(a).all(), i
        assert rel(a.double(), c) < 2 * rel(b.double(), c) + 2e-3, (i, rel(a.double(), c), rel(b.double(), c))


def test_bad_activations_raise_one_line():
    a = torch.randn(1, 16, 5, 5, device="cuda")
    with pytest.raises(ValueError, match="channels-last"):
        unwrap(ext().guide_bias_relu_(a, torch.zeros(16, device="cuda"), None))
    h = a.half().contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        unwrap(ext().guide_relu_grad_sum(h, None, h))
    c = torch.randn(1, 12, 5, 5, device="cuda").contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="multiple of 8"):
        unwrap(ext().guide_relu_grad_sum(c, None, c))


def fused_network_grads(z, ws, gout, dtype):
    """``(output, (d z, d weight, ...))`` of the fused network computing in ``dtype``."""
    out = guide_train.fused_guide_network(z, ws, dtype)
    return out, torch.autograd.grad(out, [z, *ws], gout)


def float64_network(z, ws, gout):
    """``(output, [d z, d weight, ...])`` of the network in float64 autograd (kpnt.ref.guide._network)."""
    zd, wd = z.detach().double().requires_grad_(), [w.detach().double().requires_grad_() for w in ws]
    ref = _network(zd, wd, True, proj=True)
    return ref, torch.autograd.grad(ref, [zd, *wd], gout.double())


def network_case(period, width, layers, size, seed):
    ws, g = trained_like(period, width, layers, seed)
    ws = [w.cuda().requires_grad_() for w in ws]
    N, h, w = size
    z = torch.randn(N, guide_channels(period)[0], h, w, generator=g).cuda().requires_grad_()
    gout = torch.randn(N, 3 * period * period, h, w, generator=g).cuda() * 1e-3
    return z, ws, gout


@pytest.mark.parametrize("period, width, layers, size", [(2, 64, 5, (2, 37, 45)), (6, 128, 3, (2, 19, 23))],
                         ids=["bayer", "xtrans"])
def test_float32_network_matches_float64(period, width, layers, size):
    z, ws, gout = network_case(period, width, layers, size, seed=11)
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False    # the check judges the kernels, not TF32's rounding
    try:
        out, got = fused_network_grads(z, ws, gout, torch.float32)
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    ref, ref_g = float64_network(z, ws, gout)
    assert out.dtype == torch.float32 and rel(out, ref) < 1e-5
    for i, (a, b) in enumerate(zip(got, ref_g)):
        assert a.dtype == torch.float32 and a.shape == b.shape
        assert rel(a, b) < 1e-4, (i, rel(a, b))


@pytest.mark.parametrize("period, width, layers, size", [(2, 64, 5, (2, 37, 45)), (6, 128, 3, (2, 19, 23))],
                         ids=["bayer", "xtrans"])
def test_bfloat16_network_matches_autocast(period, width, layers, size):
    """bfloat16: as close to float32 as autograd's bfloat16 path (autocast,
    kpnt-train --guide-dtype bfloat16) is; a wrong network is off by far
    more, a float32 one in disguise by nothing."""
    z, ws, gout = network_case(period, width, layers, size, seed=12)
    out, got = fused_network_grads(z, ws, gout, torch.bfloat16)
    ref = _network(z, ws, True, proj=True)
    ref_g = torch.autograd.grad(ref, [z, *ws], gout)
    with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False):
        auto = _network(z.contiguous(memory_format=torch.channels_last), ws, True, proj=True).float()
    auto_g = torch.autograd.grad(auto, [z, *ws], gout)
    assert out.dtype == torch.float32
    assert 0 < rel(out, ref) < 2 * rel(auto, ref) + 1e-3
    for i, (a, b, c) in enumerate(zip(got, ref_g, auto_g)):
        assert torch.isfinite(a).all(), i
        assert rel(a, b) < 2 * rel(c, b) + 2e-3, (i, rel(a, b), rel(c, b))


def small_guided_model(backend):
    from kpnt.model import KPNT, ModelConfig

    cfg = ModelConfig(guide_layers=3, guide_width=16, guide_skip=True, guide_proj=True)
    torch.manual_seed(3)
    m = KPNT("bayer", cfg, backend=backend).cuda()
    with torch.no_grad():                      # a trained-like guide (its last layer starts at zero)
        for w in m.sets["guide"]:
            w.add_(torch.randn_like(w) * 0.05)
    return m


def test_model_trains_its_guide_on_the_fused_passes(monkeypatch):
    import importlib

    from kpnt.mosaic.cfa import CFA

    guide_op = importlib.import_module("kpnt.ops.guide")   # the module (kpnt.ops re-exports its function)
    calls = []
    real = guide_train.CudaPrimitives.relu_grad_sum
    monkeypatch.setattr(guide_train.CudaPrimitives, "relu_grad_sum",
                        lambda self, *a: calls.append(1) or real(self, *a))
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 64, 80, generator=g).cuda() * 0.5
    noise = torch.tensor([[[2e-3] * 3, [1e-5] * 3]] * 2).cuda()
    cfa = CFA.bayer("GRBG")
    tf32 = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        grads = {}
        for fused in (True, False):
            monkeypatch.setattr(guide_op, "FUSED_TRAIN", fused)
            m = small_guided_model("cuda")
            out = m(x, cfa, noise)
            grads[fused] = torch.autograd.grad((out * out).mean(), list(m.sets["guide"]))
            if fused:
                assert len(calls) == 2 * 2 + 1, calls       # two passes a block after the first, one for layer 0
    finally:
        torch.backends.cudnn.allow_tf32 = tf32
    for a, b in zip(grads[True], grads[False]):
        assert rel(a, b) < 1e-4


def test_graphed_step_with_fused_guide_equals_eager():
    from test_graph_step import loss_fn, make_batch
    from kpnt.mosaic.cfa import CFA
    from kpnt.train.graph_step import GraphedStep, eager_step
    from kpnt.testing import TOLERANCES

    me, mg = small_guided_model("cuda"), small_guided_model("cuda")
    oe = torch.optim.Adam(me.parameters(), lr=1e-3)
    og = torch.optim.Adam(mg.parameters(), lr=1e-3, capturable=True)
    cfa = CFA.bayer("RGGB")
    gs = GraphedStep(mg, og, loss_fn, clip=1.0, example_batch=make_batch(cfa, 2, 64, 96, seed=1))
    for k in range(3):
        b = make_batch(cfa, 2, 64, 96, seed=20 + k)
        le = eager_step(me, oe, loss_fn, 1.0, b)
        lg = gs(b).result()
        assert abs(lg - le) <= TOLERANCES["glue"] * abs(le), (k, lg, le)
    for pg, pe in zip(mg.parameters(), me.parameters()):
        assert rel(pg.detach(), pe.detach()) < TOLERANCES["graphed_step"]
