"""Hard-example mining: the worst tiles are found, and sampled near."""
import numpy as np
import torch

from kpnt.cli.train import main as train_main
from test_train import _cli_args
from kpnt.train.mining import mine_hard_boxes
from kpnt.train.photos import PhotoSource
from kpnt.train.synthesis import CameraModel
from kpnt.weights_io import shipped_weights, load_weights

XYZ_TO_CAM = np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])
NOISE = np.array([[[2e-3, 1e-3, 1.5e-3], [4e-6, 2e-6, 3e-6]]])


def _flat_and_striped(size=96):
    """Photo 0: flat grey (any demosaicer is exact); photo 1: flat on its top
    half, fine colour stripes near the Nyquist limit on its bottom half."""
    flat = torch.full((3, size, size), 0.3)
    striped = flat.clone()
    xx = torch.arange(size, dtype=torch.float32)
    stripes = 0.3 + 0.25 * torch.stack([torch.sin(2.6 * xx), torch.sin(2.6 * xx + 2), torch.sin(2.6 * xx + 4)])
    striped[:, size // 2 :, :] = stripes[:, None, :]
    return PhotoSource([flat, striped])


def test_mining_keeps_the_tiles_the_model_gets_wrong():
    model = load_weights(shipped_weights("bayer"))[0]
    photos = _flat_and_striped()
    cams = [CameraModel("test cam", XYZ_TO_CAM, NOISE)]
    boxes = mine_hard_boxes(model, photos, "bayer", cams, 36, candidates=48, keep=0.25, gen=torch.Generator().manual_seed(0), batch=16)
    assert len(boxes) == 12
    # every kept tile is on the striped photo and reaches into its stripes
    assert all(k == 1 and y + 36 > 48 + 8 for k, y, _ in boxes), boxes


def test_sampling_near_hard_boxes():
    photos = _flat_and_striped()
    gen = torch.Generator().manual_seed(1)
    plain = photos.sample(4, 36, torch.Generator().manual_seed(5))
    photos.hard_boxes = [(1, 60, 30)]
    photos.hard_share = 1.0
    size = 36
    for _ in range(20):
        k, y, x = photos._near_hard_box(size, gen)
        assert k == 1 and abs(y - 60) <= size // 4 and abs(x - 30) <= size // 4
        assert 0 <= y <= 96 - size and 0 <= x <= 96 - size
    tiles = photos.sample(8, size, gen)
    # every tile comes from the striped photo's lower part: it is not flat
    assert all(float(t.std()) > 0.05 for t in tiles)
    photos.hard_boxes, photos.hard_share = [], 0.0
    assert torch.equal(photos.sample(4, 36, torch.Generator().manual_seed(5)), plain)


def test_cli_hard_share_needs_a_trained_model_and_is_recorded(tmp_path, capsys):
    assert train_main(_cli_args(tmp_path, "a", "--hard-share", "0.5")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--hard-share" in err[0] and "--init" in err[0]
    start = shipped_weights("bayer")
    assert train_main(_cli_args(tmp_path, "b", "--init", str(start), "--hard-share", "0.5", "--hard-candidates", "16",
                                "--hard-keep", "0.25", "--steps", "1")) == 0
    prov = load_weights(tmp_path / "b" / "weights.safetensors")[1]["provenance"]
    assert (prov["hard_share"], prov["hard_candidates"], prov["hard_keep"]) == (0.5, 16, 0.25)
