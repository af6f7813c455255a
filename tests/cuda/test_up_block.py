"""The fused up_block (kernels/up_block.cu) against the reference: bitwise
the same values for both sensors at odd sizes and several images; where
autograd needs a gradient, its adjoint kernel against float64 autograd (or,
switched off, the reference); the op's table through kpnt.ops; one-line
errors for bad tables."""
import pytest
import torch

from kpnt import ops
from kpnt.mosaic.cfa import CFA
from kpnt.ops import _cuda
from kpnt.ops._cuda.extension import ext, unwrap
from kpnt.ops._cuda.up_block import KERNELS
from kpnt.ref.up_block import up_block as ref_up_block

pytestmark = pytest.mark.cuda

CFAS = {"bayer RGGB": CFA.bayer("RGGB"), "bayer GRBG": CFA.bayer("GRBG"), "xtrans": CFA.xtrans(0, 0)}


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("name", list(CFAS))
@pytest.mark.parametrize("N,h,w", [(2, 5, 7), (1, 1, 1), (1, 1, 9), (3, 64, 37), (1, 300, 150)])
def test_fused_up_block_is_bitwise_the_reference(name, N, h, w, kernel):
    """Odd sizes, several images, a single base value, and (300 x 150, the
    columns kernel) more output rows than its grid's rows on GPUs of fewer
    than ~450 multiprocessors (132 on an H100: 176 grid rows for 600 output
    rows), so each thread walks several."""
    cfa = CFAS[name]
    o0 = torch.rand(N, 3, h, w, device="cuda", generator=torch.Generator("cuda").manual_seed(h * w)) * 2 - 0.5
    before = o0.clone()
    with torch.no_grad():
        got = _cuda.fused_up_block(o0, cfa, kernel)
        want = ref_up_block(o0, cfa)
    assert got.shape == (N, 3, h * cfa.block, w * cfa.block) and got.dtype == torch.float32
    assert torch.equal(got, want), (got - want).abs().max().item()
    assert torch.equal(o0, before)                         # the input is left alone


@pytest.mark.parametrize("kernel", KERNELS)
def test_non_contiguous_input_is_read_right(kernel):
    cfa = CFAS["bayer RGGB"]
    base = torch.rand(1, 3, 9, 16, device="cuda")
    o0 = base[..., ::2]                                     # a strided view
    with torch.no_grad():
        assert torch.equal(_cuda.fused_up_block(o0, cfa, kernel), ref_up_block(o0, cfa))


@pytest.mark.parametrize("name", list(CFAS))
@pytest.mark.parametrize("N,h,w", [(2, 5, 7), (1, 1, 1), (1, 1, 9), (3, 64, 37)])
def test_with_a_gradient_the_adjoint_kernel_differentiates(name, N, h, w):
    """The forward bitwise the reference's, the backward float64 autograd's
    within float32 rounding of a window's sums, a rerun the same bits."""
    cfa = CFAS[name]
    gen = torch.Generator("cuda").manual_seed(h * 100 + w)
    o0 = torch.rand(N, 3, h, w, device="cuda", generator=gen).requires_grad_()
    g = torch.randn(N, 3, h * cfa.block, w * cfa.block, device="cuda", generator=gen)
    out = _cuda.fused_up_block(o0, cfa)
    assert out.grad_fn is not None and "UpBlockWithAdjoint" in type(out.grad_fn).__name__
    assert torch.equal(out, ref_up_block(o0.detach(), cfa))
    got, = torch.autograd.grad(out, o0, g)
    od = o0.detach().double().requires_grad_()
    want, = torch.autograd.grad(ref_up_block(od, cfa), od, g.double())
    assert got.shape == want.shape and (got.double() - want).abs().max() <= 1e-6 * (want.abs().max() + 1)
    again, = torch.autograd.grad(_cuda.fused_up_block(o0, cfa), o0, g)
    assert torch.equal(got, again)


def test_with_a_gradient_and_the_switch_off_the_reference_runs(monkeypatch):
    from kpnt.ops._cuda import up_block as ub

    monkeypatch.setattr(ub, "FUSED_BACKWARD", False)
    cfa = CFAS["xtrans"]
    o0 = torch.rand(1, 3, 6, 8, device="cuda", requires_grad=True)
    out = _cuda.fused_up_block(o0, cfa)
    assert out.grad_fn is not None and "UpBlockWithAdjoint" not in type(out.grad_fn).__name__
    g, = torch.autograd.grad(out.square().sum(), o0)
    o1 = o0.detach().clone().requires_grad_()
    g_ref, = torch.autograd.grad(ref_up_block(o1, cfa).square().sum(), o1)
    assert torch.allclose(g, g_ref, rtol=1e-6, atol=0)     # (gather's backward adds with atomics: any order)


def test_the_cuda_backend_runs_it():
    cfa = CFAS["bayer GRBG"]
    o0 = torch.rand(2, 3, 11, 13, device="cuda")
    with torch.no_grad():
        assert torch.equal(ops.up_block(o0, cfa, backend="cuda"), ref_up_block(o0, cfa))
    from kpnt.ops.dispatch import implementation

    assert implementation("up_block", "cuda", o0.device) is _cuda.fused_up_block


def test_bad_tables_are_one_line_errors():
    o0 = torch.rand(1, 3, 4, 4, device="cuda")
    i = torch.zeros(3, 8, dtype=torch.int64, device="cuda")
    f = torch.zeros(3, 8, device="cuda")
    with pytest.raises(ValueError, match=r"^up_block: row_f must be \(3, 8\)") as err:
        unwrap(ext().up_block(o0, i, i, torch.zeros(3, 5, device="cuda"), i, i, f))
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="^up_block: o must be float32"):
        unwrap(ext().up_block(o0.double(), i, i, f, i, i, f))
    with pytest.raises(ValueError, match="^up_block: kernel must be 'flat' or 'columns', got 'rows'"):
        unwrap(ext().up_block(o0, i, i, f, i, i, f, "rows"))
    g = torch.rand(1, 3, 8, 8, device="cuda")
    with pytest.raises(ValueError, match=r"^up_block: the coarse size \(3, 4\) must divide"):
        unwrap(ext().up_block_adjoint(g, i, i, f, i, i, f, 3, 4))
    with pytest.raises(ValueError, match=r"^up_block: g must be \(N, 3, 8, 8\)"):
        unwrap(ext().up_block_adjoint(g[..., :6].contiguous(), i, i, f, i, i, f, 4, 4))
