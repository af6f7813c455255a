"""kpnt.ops._cuda.train_update: the graphed step's update kernels against
PyTorch's clip_grad_norm_ + Adam (weights and Adam state after several
steps, two param groups, more tensors than one launch's table holds), the
masked commit (a non-finite loss or gradient writes nothing, bit for bit),
the clip coefficient, argument errors, and GraphedStep taking the kernels
or, for an optimiser they cannot take, PyTorch's path with a warning."""
import logging

import pytest
import torch

from kpnt.ops._cuda import train_update
from kpnt.ops._cuda.train_update import masked_update, unsupported
from kpnt.testing import rel_error as rel

# Sizes around the kernels' 4096-element chunks, and more tensors (70) than a table's 64.
SIZES = [1, 7, 4095, 4096, 4097, 100_003] + [37 * (k + 1) for k in range(64)]


def make_params(seed: int):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(n, generator=g).cuda()) for n in SIZES]


def set_grads(params, seed: int, scale: float = 1.0):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = (torch.randn(p.numel(), generator=g) * scale).cuda().view_as(p)


def make_adam(params, fused: bool):
    """Capturable Adam with two param groups (other lr and weight decay), state created by one step."""
    half = len(params) // 2
    opt = torch.optim.Adam([{"params": params[:half]},
                            {"params": params[half:], "lr": 3e-3, "weight_decay": 1e-2}],
                           lr=1e-3, capturable=True, fused=fused)
    for gr in opt.param_groups:
        gr["lr"] = torch.tensor(float(gr["lr"]), device="cuda")
    set_grads(params, seed=99)
    opt.step()
    return opt


def torch_update(params, opt, clip):
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(params, clip)
    opt.step()


def state_of(params, opt):
    return [t.detach().clone() for p in params for t in (p, opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"],
                                                         opt.state[p]["step"])]


@pytest.mark.cuda
@pytest.mark.parametrize("fused", [False, True], ids=["foreach-adam", "fused-adam"])
def test_update_matches_clip_and_adam(fused):
    """Four steps (clipping active in the first three, inactive in the
    last) leave the same weights, moments and step counts as PyTorch's
    clip_grad_norm_ and Adam, to float32 rounding."""
    pa, pb = make_params(1), make_params(1)
    oa, ob = make_adam(pa, fused), make_adam(pb, fused)
    loss = torch.tensor(0.5, device="cuda")
    for k, clip in enumerate([0.5, 2.0, 10.0, 1e9]):
        set_grads(pa, seed=k, scale=0.05)
        set_grads(pb, seed=k, scale=0.05)
        torch_update(pa, oa, clip)
        applied = masked_update(pb, ob, clip, loss)
        assert float(applied) == 1.0
    for a, b in zip(state_of(pa, oa), state_of(pb, ob)):
        assert rel(b, a) < 2e-6, (a.shape, rel(b, a))
    assert all(float(ob.state[p]["step"]) == 5 for p in pb)


@pytest.mark.cuda
@pytest.mark.parametrize("where", ["gradient", "loss", "inf-gradient"])
def test_nonfinite_step_writes_nothing(where):
    params = make_params(2)
    opt = make_adam(params, fused=True)
    set_grads(params, seed=5)
    loss = torch.tensor(0.25, device="cuda")
    if where == "gradient":
        params[4].grad.view(-1)[4096] = float("nan")       # the second chunk of a tensor past the first chunk
    elif where == "inf-gradient":
        params[69].grad.view(-1)[0] = float("inf")         # a tensor of the second table
    else:
        loss = torch.tensor(float("nan"), device="cuda")
    before = state_of(params, opt)
    applied = masked_update(params, opt, 1.0, loss)
    assert float(applied) == 0.0
    assert all(torch.equal(a, b) for a, b in zip(before, state_of(params, opt)))


@pytest.mark.cuda
def test_clip_coefficient():
    """state[0] is clip_grad_norm_'s min(1, clip / (norm + 1e-6)); no clip (<= 0) gives 1."""
    from kpnt.ops._cuda.extension import ext, unwrap

    params = make_params(3)
    set_grads(params, seed=7)
    grads = [p.grad for p in params]
    norm = torch.sqrt(sum(g.double().square().sum() for g in grads)).item()
    loss = torch.ones(1, device="cuda")
    for clip in (1.0, 10.0, norm * 2):
        state = unwrap(ext().train_update_check(grads, loss, clip))
        assert abs(state[0].item() - min(1.0, clip / (norm + 1e-6))) < 1e-6 * max(1.0, clip / norm)
        assert state[1].item() == 1.0
    state = unwrap(ext().train_update_check(grads, loss, 0.0))
    assert state[0].item() == 1.0


@pytest.mark.cuda
def test_bad_arguments_raise_one_line_errors():
    from kpnt.ops._cuda.extension import ext, unwrap

    loss = torch.ones(1, device="cuda")
    with pytest.raises(ValueError, match="gradient 1 must be a contiguous float32"):
        unwrap(ext().train_update_check([torch.ones(3, device="cuda"), torch.ones(3, device="cuda").double()],
                                        loss, 1.0))
    with pytest.raises(ValueError, match="the loss must be a float32 scalar"):
        unwrap(ext().train_update_check([torch.ones(3, device="cuda")], torch.ones(2, device="cuda"), 1.0))
    params = make_params(4)[:2]
    opt = make_adam(params, fused=True)
    st = [opt.state[p] for p in params]
    state = unwrap(ext().train_update_check([p.grad for p in params], loss, 1.0))
    with pytest.raises(ValueError, match="exp_avg 1 must be a contiguous float32 tensor of the parameter's size"):
        unwrap(ext().train_update_adam(params, [p.grad for p in params], [st[0]["exp_avg"], st[0]["exp_avg"]],
                                       [s["exp_avg_sq"] for s in st], [s["step"] for s in st], state,
                                       opt.param_groups[0]["lr"], 0.9, 0.999, 1e-8, 0.0))


@pytest.mark.cuda
def test_graphed_step_takes_the_kernels(monkeypatch, caplog):
    """GraphedStep updates through masked_update for a plain capturable
    Adam, and through PyTorch (with a warning naming why) for AMSGrad."""
    from test_graph_step import loss_fn, make_batch

    from kpnt.model import KPNT
    from kpnt.mosaic.cfa import CFA
    from kpnt.train.graph_step import GraphedStep

    calls = []
    real = train_update.masked_update
    monkeypatch.setattr(train_update, "masked_update", lambda *a: calls.append(1) or real(*a))
    cfa = CFA.bayer("RGGB")
    b = make_batch(cfa, 1, 64, 64, seed=3)
    m = KPNT("bayer", backend="cuda").cuda()
    gs = GraphedStep(m, torch.optim.Adam(m.parameters(), lr=1e-3, capturable=True), loss_fn, clip=1.0,
                     example_batch=b)
    assert calls, "the captured step did not use the update kernels"
    assert gs(b).result() is not None
    calls.clear()
    m2 = KPNT("bayer", backend="cuda").cuda()
    with caplog.at_level(logging.WARNING, logger="kpnt.train"):
        gs2 = GraphedStep(m2, torch.optim.Adam(m2.parameters(), lr=1e-3, capturable=True, amsgrad=True), loss_fn,
                          clip=1.0, example_batch=b)
    assert not calls
    assert "amsgrad=True" in caplog.text
    assert gs2(b).result() is not None


def test_unsupported_names_the_reason():
    """The reasons the update kernels refuse an optimiser (these checks need no GPU)."""
    p = torch.nn.Parameter(torch.ones(3))
    assert "amsgrad=True" in unsupported(torch.optim.Adam([p], amsgrad=True), [p])
    assert "not torch.optim.Adam" in unsupported(torch.optim.SGD([p], lr=0.1), [p])
    assert "learning rate" in unsupported(torch.optim.Adam([p], lr=1e-3), [p])
    opt = torch.optim.Adam([p], lr=torch.tensor(1e-3))
    assert "CUDA device" in unsupported(opt, [p])
