"""kpnt.ops: argument checks and backend dispatch."""
import pytest
import torch

from kpnt import ops
from kpnt.model import KPNT
from kpnt.mosaic.cfa import CFA
from kpnt.ops import dispatch
from kpnt.spec import ColourLevelSpec, FrontLevelSpec


@pytest.fixture
def fake_cuda(monkeypatch):
    """A 'cuda' backend that wraps the reference and counts calls."""
    monkeypatch.setattr(dispatch, "_registered", dict(dispatch._registered))
    monkeypatch.setattr(dispatch, "_loaders", {})
    calls = []

    def colour_level(*args):
        calls.append("colour_level")
        return dispatch.OPS["colour_level"](*args)

    loads = []

    def loader():
        loads.append(1)
        return {"colour_level": colour_level}

    ops.register_backend("cuda", loader)
    return calls, loads


def test_checks_name_the_argument():
    with pytest.raises(ValueError, match="mosaic channels: expected 1, got 3"):
        ops.colour_base(torch.zeros(1, 3, 4, 4), CFA.bayer())
    with pytest.raises(ValueError, match="mosaic size: expected multiples of the block size 3"):
        ops.colour_base(torch.zeros(1, 1, 6, 7), CFA.xtrans().crop(1, 1))
    with pytest.raises(ValueError, match="CFA block phase"):
        ops.colour_base(torch.zeros(1, 1, 6, 6), CFA.xtrans())
    with pytest.raises(ValueError, match="colour MLP input width: expected 32, got 30"):
        ops.colour_level(torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4), [torch.zeros(64, 30), torch.zeros(16, 64)],
                         ColourLevelSpec(hidden_layers=1))
    with pytest.raises(ValueError, match="apply_mode"):
        ops.colour_level(torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4), [torch.zeros(64, 32), torch.zeros(16, 64)],
                         ColourLevelSpec(hidden_layers=1, apply_mode="max"))
    with pytest.raises(ValueError, match="front weight sets: expected 3"):
        x = torch.zeros(1, 1, 6, 6)
        ops.front_level(x, torch.zeros(1, 3, 6, 6), torch.zeros(1, 3, 6, 6), torch.zeros(1, 2, 3),
                        CFA.xtrans().crop(1, 1), [[], []], FrontLevelSpec())
    with pytest.raises(ValueError, match="noise: expected shape \\(1, 2, 3\\)"):
        ops.detail_var(torch.zeros(1, 3, 4, 4), torch.zeros(2, 2, 3), (1, 2, 1), 0)
    with pytest.raises(ValueError, match="backend must be one of"):
        ops.pyramid_down(torch.zeros(1, 3, 4, 4), backend="tpu")
    with pytest.raises(ValueError, match="backend 'cuda' is not available"):
        ops.pyramid_down(torch.zeros(1, 3, 4, 4), backend="cuda")


def test_registered_backend_is_used_lazily_with_reference_for_the_rest(fake_cuda):
    calls, loads = fake_cuda
    assert loads == []                                   # registering loads nothing
    model = KPNT("bayer")
    x = torch.rand(1, 1, 16, 16)
    noise = torch.tensor([[[1e-3] * 3, [1e-5] * 3]])
    ref = model(x, CFA.bayer(), noise)
    model.backend = "cuda"
    out = model(x, CFA.bayer(), noise)
    assert loads == [1] and calls == ["colour_level"] * model.config.levels
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # 'auto' on CPU tensors stays on the reference
    model.backend = "auto"
    model(x, CFA.bayer(), noise)
    assert len(calls) == model.config.levels


def test_register_rejects_unknown_ops_and_names():
    with pytest.raises(ValueError, match="unknown ops"):
        ops.register_backend("cuda", {"fused_everything": lambda: None})
    with pytest.raises(ValueError, match="backend name"):
        ops.register_backend("torch", {})


def test_backend_with_only_an_mlp_runs_inside_the_composites(monkeypatch):
    monkeypatch.setattr(dispatch, "_registered", dict(dispatch._registered))
    monkeypatch.setattr(dispatch, "_loaders", {})
    rows = []

    def mlp(x, weights, slope):
        rows.append(x.shape[0])
        return dispatch.OPS["mlp"](x, weights, slope)

    ops.register_backend("cuda", {"mlp": mlp})
    model = KPNT("bayer", backend="cuda")
    x = torch.rand(1, 1, 16, 16)
    noise = torch.tensor([[[1e-3] * 3, [1e-5] * 3]])
    out = model(x, CFA.bayer(), noise)
    # 16x16 mosaic padded by 2 on each side: base 10x10, levels 10, 5, 3, 2
    # (coarse first), then the 2 site classes of 20*20/2 photosites
    assert rows == [4, 9, 25, 100, 200, 200]
    model.backend = "torch"
    torch.testing.assert_close(out, model(x, CFA.bayer(), noise), rtol=0, atol=0)
