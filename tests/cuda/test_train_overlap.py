"""The training loop's overlap on a GPU: synthesising a batch never waits
for the GPU (so the next batch is built while a graphed step runs), and a
run that reads each graphed step's loss one step late ends with the same
weights and history as one that reads at once."""
import pytest
import torch

from test_train import NOISE, XYZ_TO_CAM, _photos

from kpnt.model import KPNT
from kpnt.train.loop import Trainer, TrainConfig
from kpnt.train.synthesis import CameraModel, SynthConfig, random_cfa, synthesize


def _source(sensor, batch=2, tile=48):
    photos = _photos(size=96).to("cuda")
    photos.zoom_out, photos.zoom_share = 1.5, 0.5                      # the interpolating crop path too
    cams = [CameraModel("test cam", XYZ_TO_CAM, NOISE)]
    # every augmentation drawn for every image: the saturation and blur copies run each time
    synth = SynthConfig(saturation_prob=1.0, blur_prob=1.0, low_noise_prob=0.5, zero_noise_prob=0.2)

    def source(gen):
        return synthesize(photos.sample(batch, tile, gen), random_cfa(sensor, gen), cams, gen, synth)

    return source


@pytest.mark.cuda
@pytest.mark.parametrize("sensor", ["bayer", "xtrans"])
def test_synthesis_on_the_gpu_never_waits_for_it(sensor):
    source = _source(sensor)
    gen = torch.Generator().manual_seed(0)
    source(gen)                                 # first calls may initialise libraries
    prev = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")     # any host synchronisation raises
    try:
        for _ in range(4):
            batch = source(gen)
    finally:
        torch.cuda.set_sync_debug_mode(prev)
    torch.cuda.synchronize()
    assert batch.x.is_cuda and batch.noise.is_cuda and batch.wb.is_cuda and torch.isfinite(batch.x).all()


@pytest.mark.cuda
def test_synthesis_values_do_not_depend_on_the_copy_path(monkeypatch):
    """The pinned, queued copies hand the GPU the same draws as plain ones."""
    import kpnt.train.synthesis as synthesis

    source = _source("bayer")
    a = source(torch.Generator().manual_seed(3))
    monkeypatch.setattr(synthesis, "to_device", lambda t, dev: t.to(dev))
    b = source(torch.Generator().manual_seed(3))
    for name in ("x", "target", "noise", "valid", "wb"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def _train(tmp_path, overlap: bool, sensor="bayer"):
    torch.manual_seed(0)
    model = KPNT(sensor, backend="cuda").cuda()
    source = _source(sensor)
    val = [source(torch.Generator().manual_seed(99))]
    cfg = TrainConfig(steps=12, val_every=5, ckpt_every=5, seed=1, overlap_steps=overlap, lr=1e-3)
    tr = Trainer(model, cfg, source, val, tmp_path, {"data": "test"})
    assert tr.graphed is not None, "the test needs the CUDA-graph step"
    hist = tr.run(progress=False)
    return hist, [p.detach().clone() for p in model.parameters()]


@pytest.mark.cuda
def test_late_read_trains_the_same_weights(tmp_path):
    h_late, w_late = _train(tmp_path / "late", overlap=True)
    h_now, w_now = _train(tmp_path / "now", overlap=False)
    assert h_late.steps == h_now.steps == list(range(1, 13))
    assert h_late.losses == h_now.losses
    assert h_late.val_steps == h_now.val_steps == [5, 10, 12]
    assert h_late.val_psnr == h_now.val_psnr
    assert all(torch.equal(a, b) for a, b in zip(w_late, w_now))
