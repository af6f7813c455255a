"""Denoise pipeline (kpnt.denoise): receptive field, tiling, inference
paths, staged tile loop, thread-count independence.  The kpnt-denoise CLI's
tests are in tests/test_denoise_cli.py."""
import numpy as np
import pytest
import torch

from denoise_helpers import NOISE_WB, random_model, scene, write_raw
from kpnt.denoise import denoise_array, receptive_radius
from kpnt.model import KPNT, ModelConfig
from kpnt.mosaic import CFA


@pytest.mark.parametrize("sensor,cfa,size", [("bayer", CFA.bayer("GRBG"), 256), ("xtrans", CFA.xtrans(2, 3), 360)])
def test_receptive_radius_bound_covers_measured(sensor, cfa, size):
    model = random_model(sensor).double()
    x = torch.from_numpy(scene(size, size)).double()[None, None]
    noise = torch.from_numpy(NOISE_WB).double()[None]
    c = size // 2
    with torch.no_grad():
        a = model(x, cfa, noise)
        x2 = x.clone()
        x2[..., c, c] += 0.2
        b = model(x2, cfa, noise)
    changed = torch.nonzero((a - b).abs().amax(dim=1)[0] > 1e-13)
    measured = int((changed - c).abs().max())
    bound = receptive_radius(model, cfa)
    assert 0 < measured <= bound, (measured, bound)
    assert measured < c - 8, "test image too small to measure the radius"


@pytest.mark.parametrize("sensor,cfa,shape", [("bayer", CFA.bayer("RGGB"), (330, 190)), ("xtrans", CFA.xtrans(), (366, 200))])
def test_tiled_equals_untiled(sensor, cfa, shape):
    model = random_model(sensor, seed=1)
    x = scene(*shape, seed=2)
    whole = denoise_array(model, x, cfa, NOISE_WB, tile=0)
    tiles = []
    tiled = denoise_array(model, x, cfa, NOISE_WB, tile=shape[0] // 2, progress=tiles.append)
    assert len(tiles) > 1, "the test must actually tile"
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)


@pytest.mark.parametrize("sensor,cfa,shape", [("bayer", CFA.bayer("GBRG"), (250, 170)), ("xtrans", CFA.xtrans(4, 1), (258, 200))])
def test_ensemble_tiled_equals_untiled_and_differs_from_one_view(sensor, cfa, shape):
    """--ensemble: each tile's rotated copies see the same margin, so tiling
    changes nothing; the mean of the views is not the single view."""
    model = random_model(sensor, seed=3)
    x = scene(*shape, seed=4)
    whole = denoise_array(model, x, cfa, NOISE_WB, tile=0, views=4)
    tiles = []
    tiled = denoise_array(model, x, cfa, NOISE_WB, tile=shape[0] // 2, progress=tiles.append, views=4)
    assert len(tiles) > 1
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)
    single = denoise_array(model, x, cfa, NOISE_WB, tile=0)
    assert np.abs(whole - single).max() > 1e-3


# ----------------------------------------------------------------------
# inference paths of the reference ops (no_grad) against the autograd path
# ----------------------------------------------------------------------
@pytest.mark.parametrize("sensor,cfa,shape,cfg,dtype,tol", [
    ("bayer", CFA.bayer("GRBG"), (2, 1, 70, 93), ModelConfig(), torch.float32, 1e-5),
    ("bayer", CFA.bayer("RGGB"), (1, 1, 4, 4), ModelConfig(), torch.float32, 1e-5),
    ("xtrans", CFA.xtrans(2, 3), (1, 1, 97, 80), ModelConfig(), torch.float32, 1e-5),
    ("rgb", None, (2, 3, 30, 41), ModelConfig(), torch.float32, 1e-5),
    # plain normalisation of random kernels divides by sums near 0 (outputs
    # ~80): compare in float64, where the rounding is not amplified past 1e-9
    ("xtrans", CFA.xtrans(), (1, 1, 12, 13), ModelConfig(apply_mode="plain"), torch.float64, 1e-9),
    ("bayer", CFA.bayer("BGGR"), (1, 1, 64, 50), ModelConfig(noise_input=False, apply_mode="plain"), torch.float64, 1e-9),
])
def test_inference_path_equals_autograd_path(sensor, cfa, shape, cfg, dtype, tol, monkeypatch):
    """Under no_grad the colour levels, front level and colour base take
    chunked, index-free paths: same outputs.  Small chunks force several
    chunks per level."""
    import kpnt.ref.mlp as ref_mlp

    monkeypatch.setattr(ref_mlp, "INFERENCE_CHUNK_CPU", 256)
    torch.manual_seed(3)
    model = KPNT(sensor, cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model = model.to(dtype)
    x = (torch.rand(shape) * 0.8).to(dtype)
    noise = torch.tensor([[[2e-3, 1e-3, 1.5e-3], [4e-6, 2e-6, 3e-6]]] * shape[0], dtype=dtype)
    ref = model(x, cfa, noise).detach()         # autograd on: the index-based reference path
    with torch.no_grad():
        fast = model(x, cfa, noise)
    err = (ref - fast).abs().max().item()
    assert err <= tol * max(1.0, ref.abs().max().item()), err


def test_denoise_raw_tiled_equals_untiled_uint16(tmp_path):
    from kpnt.denoise import NoiseChoice, count_tiles, denoise_raw
    from kpnt.io.raw import read_raw

    model = random_model("bayer", seed=4)
    raw = read_raw(write_raw(tmp_path / "r.dng", CFA.bayer("GBRG"), shape=(300, 260)))
    noise = NoiseChoice(np.array([[1e-3] * 3, [1e-5] * 3], np.float32), "given")
    whole = denoise_raw(model, raw, noise, tile=0)
    assert count_tiles(raw.mosaic.shape, model, raw.cfa, 100) > 1
    tiled = denoise_raw(model, raw, noise, tile=100)
    np.testing.assert_allclose(tiled, whole, atol=1e-4, rtol=0)
    u16 = denoise_raw(model, raw, noise, tile=100, dtype=np.uint16)
    assert u16.dtype == np.uint16
    from kpnt.denoise import to_uint16

    assert np.abs(u16.astype(np.int64) - to_uint16(whole).astype(np.int64)).max() <= 1


def test_inference_path_with_a_backend_mlp(monkeypatch):
    """A backend's MLP (row layout, e.g. the fused CUDA one) also runs in the
    chunked inference path: it gets (pixels, n_in) row blocks of at most a
    chunk, and the result equals the reference."""
    import kpnt.ref.mlp as ref_mlp
    from kpnt.ref.colour_level import colour_level
    from kpnt.ref.front_level import front_level

    monkeypatch.setattr(ref_mlp, "INFERENCE_CHUNK_CPU", 300)
    calls = []

    def row_mlp(x, weights, slope):
        assert x.is_contiguous() and x.shape[1] == weights[0].shape[1]
        calls.append(x.shape[0])
        return ref_mlp.mlp(x, weights, slope)

    torch.manual_seed(5)
    model = random_model("xtrans", seed=5)
    cfa = CFA.xtrans().crop(*CFA.xtrans().block_phase)
    sets = model.weight_sets()
    D, var = torch.randn(1, 3, 40, 30) * 0.01, torch.rand(1, 3, 40, 30) * 1e-4 + 1e-5
    want = colour_level(D, var, sets["colour"], model.config.colour_spec)
    with torch.no_grad():
        got = colour_level(D, var, sets["colour"], model.config.colour_spec, mlp_fn=row_mlp)
    assert calls and max(calls) <= 300
    for a, b in zip(want, got):
        torch.testing.assert_close(b, a.detach(), atol=1e-6, rtol=0)
    x = torch.rand(1, 1, 36, 48)
    U, S = torch.rand(1, 3, 36, 48), torch.rand(1, 3, 36, 48)
    noise = torch.from_numpy(NOISE_WB)[None]
    fronts = [sets[f"front.{c}"] for c in cfa.class_names]
    want = front_level(x, U, S, noise, cfa, fronts, model.config.front_spec)
    calls.clear()
    with torch.no_grad():
        got = front_level(x, U, S, noise, cfa, fronts, model.config.front_spec, mlp_fn=row_mlp)
    assert calls and max(calls) <= 300
    torch.testing.assert_close(got, want.detach(), atol=1e-6, rtol=0)


def test_tile_plan_balanced_and_exact():
    from kpnt.denoise import plan_tiles, tile_alignment

    model = KPNT("xtrans")
    cfa = CFA.xtrans(1, 4)
    align = tile_alignment(model, cfa)
    for shape, tile in [((4000, 6000), 2048), ((8400, 12000), 2048), ((1000, 700), 300), ((500, 500), 500)]:
        tiles = plan_tiles(shape, model, cfa, tile)
        cover = np.zeros(shape, np.int32)
        for t in tiles:
            cover[t.cy0:t.cy1, t.cx0:t.cx1] += 1
            assert t.y0 % align == 0 and t.x0 % align == 0, "tiles start on the CFA/pyramid grid"
            assert t.y0 <= t.cy0 < t.cy1 <= t.y1 and t.x0 <= t.cx0 < t.cx1 <= t.x1
        assert (cover == 1).all(), "cores cover the image exactly once"
        sides = sorted({t.cy1 - t.cy0 for t in tiles}) + sorted({t.cx1 - t.cx0 for t in tiles})
        assert max(sides) <= -(-tile // align) * align
        if len(tiles) > 1:
            heights = sorted({t.cy1 - t.cy0 for t in tiles})
            assert heights[-1] - heights[0] <= align * 2, f"balanced cores {heights}"


def test_result_independent_of_thread_count():
    """Each tile runs single-threaded (threads only run tiles in parallel):
    the same bytes whatever torch's thread count."""
    model = random_model("bayer", seed=6)
    x = scene(300, 340, seed=6)
    n = torch.get_num_threads()
    try:
        outs = []
        for threads in (1, 3):
            torch.set_num_threads(threads)
            outs.append(denoise_array(model, x, CFA.bayer("RGGB"), NOISE_WB, tile=96))
            assert torch.get_num_threads() == threads, "the thread count is restored"
    finally:
        torch.set_num_threads(n)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_blind_estimate_reads_a_bounded_central_crop(tmp_path, monkeypatch):
    """Large raws: the blind estimate sees a central, CFA-aligned crop of at
    most BLIND_MAX_PIXELS (bounded time and float64 working copies)."""
    import kpnt.denoise as dn
    import kpnt.noise as noise_mod
    from kpnt.io.raw import read_raw
    from kpnt.noise.profile import NoiseProfile

    raw = read_raw(write_raw(tmp_path / "x.dng", CFA.xtrans(1, 2), shape=(150, 222)))
    seen = {}

    def fake(mosaic, colour, mask=None):
        seen.update(mosaic=mosaic, colour=colour, mask=mask)
        return NoiseProfile(a=[1e-3] * 3, b=[1e-6] * 3)

    monkeypatch.setattr(noise_mod, "estimate_blind", fake)
    monkeypatch.setattr(dn, "BLIND_MAX_PIXELS", 60 * 90)
    assert dn.choose_noise(raw).source == "blind"
    h, w = seen["mosaic"].shape
    assert h * w <= 60 * 90 and h % 6 == 0 and w % 6 == 0 and h >= 48 and w >= 72
    ys, xs = dn._blind_crop(raw.mosaic.shape, 6)
    assert ys.start % 6 == 0 and xs.start % 6 == 0
    assert abs(ys.start - (150 - h - ys.start)) <= 6 and abs(xs.start - (222 - w - xs.start)) <= 6, "central"
    np.testing.assert_array_equal(seen["mosaic"], raw.mosaic[ys, xs])
    np.testing.assert_array_equal(seen["colour"], raw.cfa.colour_map(150, 222)[ys, xs])
    np.testing.assert_array_equal(seen["mask"], ~raw.saturated[ys, xs])
    monkeypatch.setattr(dn, "BLIND_MAX_PIXELS", 10**9)
    dn.choose_noise(raw)
    assert seen["mosaic"].shape == (150, 222), "small raws are read whole"


# ----------------------------------------------------------------------
# the pipelined path (--io-workers: decode and write threads; the GPU default)
# ----------------------------------------------------------------------
@pytest.mark.parametrize("sensor,cfa,shape", [("bayer", CFA.bayer("GRBG"), (200, 260)), ("xtrans", CFA.xtrans(), (240, 252))])
def test_staged_tile_loop_same_bytes_as_cpu_path(tmp_path, sensor, cfa, shape):
    """The GPU tile loop (device-side white balance and uint16 conversion,
    double-buffered staging), run on the CPU, writes the CPU path's bytes."""
    from kpnt.denoise import NoiseChoice, denoise_raw
    from kpnt.io.raw import read_raw

    raw = read_raw(write_raw(tmp_path / "r.dng", cfa, shape=shape))
    model = random_model(sensor, scale=0.1)
    noise = NoiseChoice(np.array([[1e-3] * 3, [1e-5] * 3], np.float32), "given")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)               # the CPU path runs its tiles single-threaded
    try:
        for dtype in (np.uint16, np.float32):
            for tile in (0, 96):
                ticks = []
                ref = denoise_raw(model, raw, noise, tile=tile, dtype=dtype, reproducible=True)
                got = denoise_raw(model, raw, noise, tile=tile, dtype=dtype, staged=True, progress=ticks.append)
                assert got.dtype == ref.dtype and np.array_equal(got, ref), (dtype, tile)
                assert len(ticks) == (1 if tile == 0 else 9)
    finally:
        torch.set_num_threads(threads)


def test_staged_tile_loop_errors_propagate(tmp_path, monkeypatch):
    """An error in the drainer thread (here: the progress callback) or in
    the launching thread (the model) reaches the caller; nothing hangs."""
    import kpnt.denoise as dn
    from kpnt.io.raw import read_raw

    raw = read_raw(write_raw(tmp_path / "r.dng", CFA.bayer("RGGB"), shape=(200, 260)))
    model = random_model("bayer", scale=0.1)
    noise = dn.NoiseChoice(np.array([[1e-3] * 3, [1e-5] * 3], np.float32), "given")
    seen = []

    def progress(n):
        seen.append(n)
        if len(seen) == 3:
            raise OSError("disk full while draining")

    with pytest.raises(OSError, match="disk full while draining"):
        dn.denoise_raw(model, raw, noise, tile=96, staged=True, progress=progress)
    calls = []
    real = dn._run_model

    def failing(*a):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("model failed on tile 4")
        return real(*a)

    monkeypatch.setattr(dn, "_run_model", failing)
    with pytest.raises(RuntimeError, match="tile 4"):
        dn.denoise_raw(model, raw, noise, tile=96, staged=True)


def test_gpu_default_tile_and_allocator_setting(monkeypatch):
    import os

    import kpnt.denoise as dn
    from kpnt.model import ModelConfig
    from kpnt.ops import capability, dispatch

    assert dn.default_tile("cpu") == dn.default_tile("cpu", fused=True) == dn.DEFAULT_TILE
    assert dn.default_tile("cuda") == dn.DEFAULT_TILE_GPU
    assert dn.default_tile("cuda", fused=True) == dn.DEFAULT_TILE_GPU_FUSED > dn.DEFAULT_TILE_GPU
    # runs_fused: never on a CPU; on a GPU when the backend resolves to the
    # kernels and both MLP shapes are compiled.
    shipped = ModelConfig(width=128, front_width=128, front_kernels="per_channel", apply_mode="plain")
    assert not capability.runs_fused(shipped, "auto", "cpu")
    monkeypatch.setattr(dispatch, "resolve_backend", lambda b, d: "cuda" if b != "torch" else "torch")
    assert capability.runs_fused(shipped, "auto", "cuda")
    assert capability.runs_fused(ModelConfig(), "cuda", "cuda:0")
    assert not capability.runs_fused(shipped, "torch", "cuda")
    assert not capability.runs_fused(ModelConfig(width=96), "auto", "cuda")          # not compiled
    assert not capability.runs_fused(ModelConfig(front_radius=3), "auto", "cuda")    # not fused at all
    # The allocator setting: set when unset and CUDA is not initialised,
    # never over the user's own.
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "")      # recorded, so teardown restores the original state
    monkeypatch.delenv("PYTORCH_CUDA_ALLOC_CONF")
    assert dn.configure_cuda_allocator()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == dn.CUDA_ALLOC_CONF
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "max_split_size_mb:64")
    assert not dn.configure_cuda_allocator()
    assert os.environ["PYTORCH_CUDA_ALLOC_CONF"] == "max_split_size_mb:64"
