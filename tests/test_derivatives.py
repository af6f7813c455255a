"""The seed's DEBUG_DERIV check: autograd gradients of the full model against
central finite differences of the loss, for weights of every weight set.

float64, the real architecture (widths, layers, levels), tiny images; SMAPE
against a random target as in training.
"""
import pytest
import torch

from kpnt.model import KPNT
from kpnt.mosaic.cfa import CFA
from kpnt.testing import central_difference

STEP = 1e-6
PER_SET = 6


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny float64 graphs: one thread avoids OpenMP spin-waits on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def smape(o, r, eps=1e-3):
    return ((o - r).abs() / (o.abs() + r.abs() + eps)).mean()


@pytest.mark.parametrize(
    "sensor,cfa,shape",
    [("bayer", CFA.bayer("GRBG"), (1, 1, 24, 24)), ("xtrans", CFA.xtrans(1, 4), (1, 1, 36, 36)), ("rgb", None, (1, 3, 16, 16))],
)
def test_gradients_match_finite_differences(sensor, cfa, shape):
    torch.manual_seed(0)
    model = KPNT(sensor).double()
    # perturb the init so no weight sits at a special value (e.g. the exact
    # constant-carrying unit) and kernels are far from uniform
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype) * (p != 0))
    x = 0.05 + 0.5 * torch.rand(shape, generator=gen, dtype=torch.float64)
    noise = torch.tensor([[[2e-3, 1e-3, 3e-3], [2e-5, 1e-5, 3e-5]]], dtype=torch.float64)
    target = torch.rand(1, 3, *shape[-2:], generator=gen, dtype=torch.float64)
    loss = smape(model(x, cfa, noise), target)
    loss.backward()
    sets = model.weight_sets()
    assert len(sets) == {"bayer": 3, "xtrans": 4, "rgb": 1}[sensor]
    for name, mats in sets.items():
        checked = 0
        for layer in (0, len(mats) // 2, len(mats) - 1):
            g = mats[layer].grad
            flat = g.abs().flatten()
            # weights with a non-negligible gradient, spread over the ranking
            cand = torch.nonzero(flat > 0.1 * flat.max()).flatten()
            pick = cand[torch.randperm(len(cand), generator=gen)[: PER_SET // 3]]
            for i in pick.tolist():
                fd = central_difference(lambda: smape(model(x, cfa, noise), target).item(), mats[layer], i, STEP)
                ad = g.view(-1)[i].item()
                assert abs(fd - ad) <= 1e-5 * abs(ad), f"{name} layer {layer} weight {i}: autograd {ad:.9g} vs FD {fd:.9g}"
                checked += 1
        assert checked == PER_SET, name
