"""Dead guide channels (kpnt.train.revive, kpnt.ref.guide.record_activity):
found where no input activates them, revived with small fresh weights,
everything else left as it was."""
from types import SimpleNamespace

import pytest
import torch

from kpnt.model import KPNT, ModelConfig
from kpnt.mosaic.cfa import CFA
from kpnt.ref.guide import record_activity, record_preactivation
from kpnt.train.revive import guide_activity, revive_dead_guide_channels

NOISE = torch.tensor([[[2e-3, 1e-3, 3e-3], [2e-5, 1e-5, 3e-5]]])
KILLED = [(1, 2), (1, 5), (2, 0)]          # (hidden layer, channel)


def _model_and_probes(seed=0):
    gen = torch.Generator().manual_seed(seed)
    model = KPNT("bayer", ModelConfig(guide_layers=3, guide_width=8, guide_skip=True))
    with torch.no_grad():
        g = model.sets["guide"]
        g[-2].copy_(0.3 * torch.randn(g[-2].shape, generator=gen))   # a trained guide's last layer is not zero
        for layer, ch in KILLED:
            g[2 * layer + 1][ch] = -1e3                                # a ReLU that no input opens
    probes = [SimpleNamespace(x=0.05 + 0.4 * torch.rand(2, 1, 40, 44, generator=gen), cfa=CFA.bayer("GRBG"),
                              noise=NOISE.expand(2, -1, -1)) for _ in range(2)]
    return model, probes


def test_activity_is_zero_exactly_for_the_dead_channels():
    model, probes = _model_and_probes()
    act = guide_activity(model, probes)
    assert len(act) == 3 and all(a.shape == (8,) for a in act)
    for layer, a in enumerate(act):
        for ch in range(8):
            dead = (layer, ch) in KILLED
            assert (a[ch] == 0) == dead, (layer, ch, float(a[ch]))
    assert all(((a >= 0) & (a <= 1)).all() for a in act)


def test_activity_is_recorded_only_inside_the_block():
    model, probes = _model_and_probes()
    with torch.no_grad():
        with record_activity() as inside:
            model(probes[0].x, probes[0].cfa, probes[0].noise)
        model(probes[0].x, probes[0].cfa, probes[0].noise)
    assert len(inside) == 3


def test_preactivation_tells_a_channel_killed_by_its_weights_from_one_killed_by_its_bias():
    model, probes = _model_and_probes()
    with torch.no_grad():
        w = model.sets["guide"][2 * 2]
        w[3] = -w[3].abs()           # layer 2's input is the non-negative stream: all-negative weights keep it off
    with torch.no_grad(), record_preactivation() as pre, record_activity() as act:
        model(probes[0].x, probes[0].cfa, probes[0].noise)
    assert len(pre) == 3 and all(p.shape == (8,) for p in pre)
    assert act[2][3] == 0 and pre[2][3] <= 0          # dead by its weights
    for layer, ch in KILLED:                          # dead by a bias of -1e3, weights untouched
        assert act[layer][ch] == 0 and pre[layer][ch] > 0
    assert (pre[1] > 0).sum() >= 6                    # random weights: most channels reach above 0


def test_revival_wakes_the_dead_and_keeps_the_rest():
    model, probes = _model_and_probes()
    before = [t.detach().clone() for t in model.parameters()]
    with torch.no_grad():
        out_before = model(probes[0].x, probes[0].cfa, probes[0].noise)
    report = revive_dead_guide_channels(model, probes, torch.Generator().manual_seed(1))
    assert report == {"dead": [0, 2, 1], "revived": [0, 2, 1], "width": 8}
    act = guide_activity(model, probes)
    assert all(act[layer][ch] > 0 for layer, ch in KILLED)
    changed = {(layer, ch) for layer in range(3) for ch in range(8)
               if not torch.equal(model.sets["guide"][2 * layer][ch], before_guide(model, before)[2 * layer][ch])}
    assert changed == set(KILLED)
    # Nothing but the guide's revived rows moved.
    n_guide = len(model.sets["guide"])
    guide_ids = {id(p) for p in model.sets["guide"]}
    for p, b in zip(model.parameters(), before):
        if id(p) not in guide_ids:
            assert torch.equal(p, b)
    assert n_guide == 8
    # Small fresh weights: the output moves, but little.
    with torch.no_grad():
        out_after = model(probes[0].x, probes[0].cfa, probes[0].noise)
    moved = (out_after - out_before).abs().max()
    assert 0 < moved < 0.05 * out_before.abs().max()


def before_guide(model, before):
    """The guide's tensors among ``before`` (a copy of model.parameters())."""
    ids = [id(p) for p in model.parameters()]
    return [before[ids.index(id(p))] for p in model.sets["guide"]]


def test_a_model_without_a_guide_is_refused():
    model = KPNT("bayer", ModelConfig())
    with pytest.raises(ValueError, match="no guide"):
        revive_dead_guide_channels(model, [], torch.Generator())


def test_cli_revives_the_shipped_guide_and_records_it(tmp_path, capsys):
    from kpnt.cli.train import main as train_main
    from kpnt.weights_io import load_weights, shipped_weights
    from test_train import _cli_args

    assert train_main(_cli_args(tmp_path, "a", "--revive-dead-guide")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--revive-dead-guide" in err[0] and "--init" in err[0]
    assert train_main(_cli_args(tmp_path, "b", "--init", str(shipped_weights("bayer")), "--revive-dead-guide",
                                "--steps", "1")) == 0
    report = load_weights(tmp_path / "b" / "weights.safetensors")[1]["provenance"]["revived_guide_channels"]
    assert report["width"] == 64 and len(report["dead"]) == 16 and report["revived"] == report["dead"]


def test_cli_converts_the_shipped_guide_to_projection_blocks_with_the_same_output(tmp_path):
    """--init of a residual guide with --guide-proj: the same function (P =
    identity); with --revive-dead-guide too, the revival is recorded."""
    from kpnt.cli.train import main as train_main
    from kpnt.weights_io import load_weights, shipped_weights
    from test_train import _cli_args

    # --steps 1 at a learning rate of 1e-12: the written weights are the converted start.
    for name, extra in (("p", []), ("pr", ["--revive-dead-guide"])):
        assert train_main(_cli_args(tmp_path, name, "--init", str(shipped_weights("bayer")), "--guide-proj",
                                    "--steps", "1", "--lr", "1e-12", *extra)) == 0
    ship = load_weights(shipped_weights("bayer"))[0]
    x = 0.05 + 0.4 * torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        model = load_weights(tmp_path / "p" / "weights.safetensors")[0]
        assert model.config.guide_proj
        assert torch.allclose(model(x, CFA.bayer("RGGB"), NOISE), ship(x, CFA.bayer("RGGB"), NOISE), atol=1e-5)
    model, meta = load_weights(tmp_path / "pr" / "weights.safetensors")
    report = meta["provenance"]["revived_guide_channels"]
    assert model.config.guide_proj and sum(report["revived"]) > 0


def test_revival_of_projection_blocks_keeps_the_output_exactly():
    """A projected channel is revived with its projection column zeroed:
    where it was dead (the probes), the output does not move at all."""
    gen = torch.Generator().manual_seed(0)
    model = KPNT("bayer", ModelConfig(guide_layers=3, guide_width=8, guide_skip=True, guide_proj=True))
    with torch.no_grad():
        g = model.sets["guide"]
        for k in (4, 8):
            g[k].copy_(torch.eye(8)[:, :, None, None] + 0.1 * torch.randn(g[k].shape, generator=gen))
        g[-2].copy_(0.3 * torch.randn(g[-2].shape, generator=gen))
        g[7][3] = -1e3                                     # layer 2's channel 3: dead
    probes = [SimpleNamespace(x=0.05 + 0.4 * torch.rand(2, 1, 40, 44, generator=gen), cfa=CFA.bayer("GRBG"),
                              noise=NOISE.expand(2, -1, -1))]
    with torch.no_grad():
        before = model(probes[0].x, probes[0].cfa, probes[0].noise)
    report = revive_dead_guide_channels(model, probes, torch.Generator().manual_seed(1))
    assert report["dead"] == [0, 0, 1] and report["revived"] == [0, 0, 1]
    assert guide_activity(model, probes)[2][3] > 0 and model.sets["guide"][8][:, 3].abs().max() == 0
    with torch.no_grad():
        assert torch.equal(model(probes[0].x, probes[0].cfa, probes[0].noise), before)


def test_cli_grows_the_shipped_xtrans_guide_with_the_same_output(tmp_path, capsys):
    """--init with a wider and deeper --guide-width/--guide-layers: the same
    output; a narrower guide is refused with the way out."""
    from kpnt.cli.train import main as train_main
    from kpnt.weights_io import load_weights, shipped_weights
    from test_train import _cli_args

    ship = load_weights(shipped_weights("xtrans"))[0]
    width, layers = ship.config.guide_width, ship.config.guide_layers
    args = _cli_args(tmp_path, "g", "--init", str(shipped_weights("xtrans")), "--guide-width", str(width + 16),
                     "--guide-layers", str(layers + 1), "--lr", "1e-12", sensor="xtrans", steps=1)
    assert train_main(args) == 0
    model, meta = load_weights(tmp_path / "g" / "weights.safetensors")
    assert meta["provenance"]["init_guide"] == {"guide_layers": layers, "guide_width": width, "guide_proj": True}
    assert (model.config.guide_width, model.config.guide_layers) == (width + 16, layers + 1)
    x = 0.05 + 0.4 * torch.rand(1, 1, 72, 72, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert torch.allclose(model(x, CFA.xtrans(), NOISE), ship(x, CFA.xtrans(), NOISE), atol=1e-5)
    args = _cli_args(tmp_path, "n", "--init", str(shipped_weights("xtrans")), "--guide-width", str(width - 16), sensor="xtrans", steps=1)
    capsys.readouterr()
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--guide-width" in err[0] and "leave them out" in err[0]
