"""Geometric self-ensemble: views are exact rotations/mirrors with the right CFA, and the mean helps."""
import numpy as np
import pytest
import torch

from kpnt.ensemble import VIEWS, _VIEWS, _forward_view, _inverse_view, ensemble_forward, view_cfa
from kpnt.mosaic.cfa import CFA
from kpnt.train.photos import PhotoSource
from kpnt.train.synthesis import CameraModel, SynthConfig, random_cfa, synthesize
from kpnt.weights_io import load_weights, shipped_weights


@pytest.mark.parametrize("cfa", [CFA.bayer("GRBG"), CFA.xtrans(1, 4)])
def test_views_are_rotations_and_mirrors_with_their_cfa(cfa):
    h, w = 14, 19                              # odd sizes: the phase of a flip depends on them
    cmap = torch.from_numpy(cfa.colour_map(h, w))
    seen = set()
    for view in _VIEWS:
        v = _forward_view(cmap, view)
        vh, vw = v.shape
        # the view's CFA describes the transformed mosaic everywhere
        assert np.array_equal(view_cfa(cfa, h, w, view).colour_map(vh, vw), v.numpy()), view
        assert torch.equal(_inverse_view(v, view), cmap)
        seen.add(tuple(_forward_view(torch.arange(6).view(2, 3), view).flatten().tolist()))
    assert len(seen) == 8                      # eight distinct elements of the square's symmetry group
    # the first four are the four rotations (0, 180, 90, 270 degrees in some sense of turning)
    a = torch.arange(12).view(3, 4)
    turns = [next(k for k in range(4) if _forward_view(a, v).shape == torch.rot90(a, k).shape
                  and torch.equal(_forward_view(a, v), torch.rot90(a, k))) for v in _VIEWS[:4]]
    assert sorted(turns) == [0, 1, 2, 3] and turns[:2] == [0, 2]


def test_one_view_is_the_model_and_the_mean_of_views_beats_their_average_error():
    """Every view, mapped back, is as good a picture as the model's own (a view
    with the wrong CFA or a wrong inverse scores far worse), and the ensemble of
    v views is their mean: its error is at most their mean error (convexity),
    so averaging never costs.  Whether it gains depends on the weights (the
    README's self-ensemble section measures that on photos)."""
    model = load_weights(shipped_weights("bayer"))[0].eval()
    g = torch.Generator().manual_seed(3)
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(64.0), indexing="ij")
    # fine diagonal colour stripes: aliasing-prone, where the views disagree
    scene = torch.stack([0.4 + 0.3 * torch.sin(0.9 * xx + 0.5 * yy + p) for p in (0.0, 2.0, 4.0)])
    photos = PhotoSource([scene.clamp(0, 1)])
    xyz = np.array([[0.7, -0.1, -0.05], [-0.4, 1.2, 0.2], [-0.05, 0.1, 0.6]])
    batch = synthesize(photos.centre_tiles(60), random_cfa("bayer", g), [CameraModel("c", xyz, np.zeros((1, 2, 3)))], g,
                       SynthConfig(zero_noise_prob=1.0, blur_prob=0.0, saturation_prob=0.0))

    def mse(out):
        return float(((out - batch.target)[..., 6:-6, 6:-6] ** 2).mean())

    h, w = batch.x.shape[-2:]
    with torch.no_grad():
        single = model(batch.x, batch.cfa, batch.noise)
        assert torch.equal(ensemble_forward(model, batch.x, batch.cfa, batch.noise, 1), single)
        per_view = [_inverse_view(model(_forward_view(batch.x, view).contiguous(), view_cfa(batch.cfa, h, w, view),
                                        batch.noise), view) for view in _VIEWS]
        ensembles = {v: ensemble_forward(model, batch.x, batch.cfa, batch.noise, v) for v in VIEWS}
    err = {v: mse(out) for v, out in ensembles.items()}
    view_err = [mse(out) for out in per_view]
    assert view_err[0] == mse(single)
    assert max(view_err) < 2 * view_err[0], view_err
    for v in VIEWS:
        assert err[v] <= sum(view_err[:v]) / v * (1 + 1e-6), (v, err, view_err)
        # the ensemble is the plain mean of the views (not, e.g., of the first one v times)
        assert torch.allclose(ensembles[v], sum(per_view[:v]) / v, atol=1e-6)
    with pytest.raises(ValueError, match="views"):
        ensemble_forward(model, batch.x, batch.cfa, batch.noise, 3)
