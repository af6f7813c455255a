"""kpnt.train.graph_step: the CUDA-graph-captured training step equals the
eager fused step (losses, weights, Adam state), skips non-finite steps
without touching weights or Adam state, keys graphs by CFA phase, and
refuses what it cannot capture.  The argument checks run on the CPU too."""
import pytest
import torch
import torch.nn.functional as F

from kpnt.model import KPNT
from kpnt.mosaic.cfa import CFA
from kpnt.train.graph_step import GraphedStep, eager_step
from kpnt.train.loss import smape
from kpnt.train.synthesis import Batch
from kpnt.testing import TOLERANCES
from kpnt.testing import rel_error as rel

BORDER = 4


def loss_fn(out, target, valid):
    return smape(out, target, valid, BORDER)


def make_batch(cfa, N, H, W, seed, nan_target=False, device="cuda"):
    g = torch.Generator(device).manual_seed(seed)
    base = F.interpolate(torch.rand(N, 3, H // 16 + 2, W // 16 + 2, device=device, generator=g), size=(H, W),
                         mode="bilinear", align_corners=False) * 0.6
    col = torch.from_numpy(cfa.colour_map(H, W)).to(device).long().expand(N, 1, H, W)
    x = base.gather(1, col) + torch.randn(N, 1, H, W, device=device, generator=g) * 0.02
    noise = torch.tensor([[2e-3] * 3, [1e-5] * 3], device=device).expand(N, 2, 3).contiguous()
    target = base.clone()
    if nan_target:
        target[0, 1, H // 2, W // 3] = float("nan")
    valid = torch.rand(N, 1, H, W, device=device, generator=g) > 0.05
    return Batch(x=x, target=target, noise=noise, valid=valid, cfa=cfa)


def state_tensors(model, opt):
    return [p.detach().clone() for p in model.parameters()] + [
        v.clone() for p in model.parameters() for v in opt.state[p].values()]


@pytest.mark.cuda
@pytest.mark.parametrize("fused", [False, True], ids=["foreach-adam", "fused-adam"])
@pytest.mark.parametrize("sensor, cfas, size", [
    ("bayer", (CFA.bayer("RGGB"), CFA.bayer("GBRG")), (2, 96, 128)),
    ("xtrans", (CFA.xtrans(), CFA.xtrans(4, 1)), (2, 102, 120)),
])
def test_graphed_step_equals_eager(sensor, cfas, size, fused):
    """Both Adams a GraphedStep takes (the capturable foreach one and the
    fused one adam_for_graphs makes), each against the eager step with the
    same kind of Adam: a skipped step must restore the fused Adam's state too."""
    N, H, W = size
    me = KPNT(sensor, backend="cuda").cuda()
    mg = KPNT(sensor, backend="cuda").cuda()
    oe = torch.optim.Adam(me.parameters(), lr=1e-3, fused=fused)
    og = torch.optim.Adam(mg.parameters(), lr=1e-3, capturable=True, fused=fused)
    gs = GraphedStep(mg, og, loss_fn, clip=1.0, example_batch=make_batch(cfas[0], N, H, W, seed=1))
    assert gs.graphs == 1
    for k in range(6):
        if k == 4:
            gs.set_lr(5e-4)
            for g in oe.param_groups:
                g["lr"] = 5e-4
        b = make_batch(cfas[k % 2], N, H, W, seed=10 + k, nan_target=(k == 3))
        le = eager_step(me, oe, loss_fn, 1.0, b)
        before = state_tensors(mg, og) if k == 3 else None
        out = gs(b)
        lg = out.result()
        if k == 3:
            assert le is None and lg is None, "a NaN step must be skipped by both"
            assert not bool(out.applied)
            after = state_tensors(mg, og)
            assert all(torch.equal(a, c) for a, c in zip(before, after)), "skipped step changed weights/Adam state"
        else:
            assert le is not None and lg is not None
            assert abs(lg - le) <= TOLERANCES["glue"] * abs(le), (k, lg, le)
    assert gs.graphs == 2
    for pg, pe in zip(mg.parameters(), me.parameters()):
        tol = TOLERANCES["graphed_step"]
        assert rel(pg.detach(), pe.detach()) < tol
        assert rel(og.state[pg]["exp_avg"], oe.state[pe]["exp_avg"]) < tol
        assert rel(og.state[pg]["exp_avg_sq"], oe.state[pe]["exp_avg_sq"]) < tol
    assert int(og.state[next(mg.parameters())]["step"].item()) == 5


@pytest.mark.cuda
def test_warmup_leaves_no_trace():
    """Capturing (warm-up steps included) changes neither weights nor Adam state."""
    cfa = CFA.bayer("RGGB")
    m = KPNT("bayer", backend="cuda").cuda()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, capturable=True)
    w0 = [p.detach().clone() for p in m.parameters()]
    GraphedStep(m, opt, loss_fn, clip=1.0, example_batch=make_batch(cfa, 1, 64, 64, seed=2))
    assert all(torch.equal(a, p) for a, p in zip(w0, m.parameters()))
    for p in m.parameters():
        st = opt.state[p]
        assert float(st["step"]) == 0 and not st["exp_avg"].any() and not st["exp_avg_sq"].any()


@pytest.mark.cuda
def test_host_sync_in_step_is_refused():
    """A loss that reads a value on the host cannot be captured: a clear error, no fallback."""
    cfa = CFA.bayer("RGGB")
    m = KPNT("bayer", backend="cuda").cuda()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, capturable=True)

    def syncing_loss(out, target, valid):
        loss = loss_fn(out, target, valid)
        return loss * (1.0 if loss.item() > 0 else 1.0)

    with pytest.raises(RuntimeError, match="synchronises with the host"):
        GraphedStep(m, opt, syncing_loss, clip=1.0, example_batch=make_batch(cfa, 1, 64, 64, seed=3))


@pytest.mark.cuda
def test_replaced_lr_raises():
    cfa = CFA.bayer("RGGB")
    m = KPNT("bayer", backend="cuda").cuda()
    opt = torch.optim.Adam(m.parameters(), lr=1e-3, capturable=True)
    b = make_batch(cfa, 1, 64, 64, seed=4)
    gs = GraphedStep(m, opt, loss_fn, clip=1.0, example_batch=b)
    opt.param_groups[0]["lr"] = 1e-4
    with pytest.raises(RuntimeError, match="set_lr"):
        gs(b)
    gs.reset()
    assert gs(b).result() is not None


def test_needs_capturable_adam():
    m = KPNT("bayer")
    with pytest.raises(ValueError, match="capturable=True"):
        GraphedStep(m, torch.optim.Adam(m.parameters(), lr=1e-3), loss_fn, clip=1.0)
    with pytest.raises(ValueError, match="Adam"):
        GraphedStep(m, torch.optim.SGD(m.parameters(), lr=1e-3), loss_fn, clip=1.0)


def test_needs_cuda_parameters():
    m = KPNT("bayer")
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedStep(m, torch.optim.Adam(m.parameters(), lr=1e-3, capturable=True), loss_fn, clip=1.0)
