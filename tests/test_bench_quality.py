"""tools/bench_quality.py's noise push beyond a camera's profiled ISOs, the
issue-6 acceptance checks, and per-case seeding."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from kpnt.mosaic import CFA
from kpnt.noise import load_profile_table
from kpnt.noise.profile import NoiseProfile



@pytest.fixture()
def table(tmp_path):
    prof = lambda iso, a, b: {"name": f"cam iso {iso}", "iso": iso, "a": [a, a * 0.8, a * 1.1], "b": [b, b * 0.9, b * 1.2]}  # noqa: E731
    doc = {"version": 0, "noiseprofiles": [{"maker": "Testmaker", "models": [{"model": "T1", "profiles": [
        prof(200, 1e-5, 2e-8), prof(800, 4e-5, 1e-7), prof(6400, 3e-4, 4e-6)]}]}]}
    p = tmp_path / "np.json"
    p.write_text(json.dumps(doc))
    return load_profile_table(p)


def test_push_profile_scales_a_by_r_and_b_by_r_squared(bq):
    p = NoiseProfile(a=[1e-4, 2e-4, 3e-4], b=[1e-6, 2e-6, 3e-6])
    q = bq.push_profile(p, 4.0)
    np.testing.assert_allclose(q.a, 4.0 * p.a, rtol=1e-15)
    np.testing.assert_allclose(q.b, 16.0 * p.b, rtol=1e-15)
    assert bq.push_profile(p, 1.0) == p
    with pytest.raises(ValueError):
        bq.push_profile(p, 0.0)


def test_push_profile_matches_a_simulated_push(bq):
    """Draw x with var a m + b, multiply by r: var(y) is the pushed profile's
    variance at the pushed mean y = r m."""
    rng = np.random.default_rng(0)
    a, b, r, m = 3e-4, 4e-6, 2.0, 0.2
    x = m + rng.normal(size=400_000) * np.sqrt(a * m + b)
    y = r * x
    q = bq.push_profile(NoiseProfile(a=[a] * 3, b=[b] * 3), r)
    want = float(q.variance(np.array(r * m), np.array(1)))
    assert y.var() == pytest.approx(want, rel=0.01)
    assert want == pytest.approx(r * r * (a * m + b))
    # a clamp (the old behaviour) would be 4x too low here
    assert y.var() > 3 * (a * m + b)


def test_profile_at_iso(bq, table):
    for iso in (200, 800, 6400):
        prof, how = bq.profile_at_iso(table, "Testmaker", "T1", iso)
        assert prof == table.lookup("Testmaker", "T1", iso) and how == "profiled"
    prof, how = bq.profile_at_iso(table, "Testmaker", "T1", 3200)
    assert prof == table.lookup("Testmaker", "T1", 3200) and how == "interpolated"
    last = table.lookup("Testmaker", "T1", 6400)
    prof, how = bq.profile_at_iso(table, "Testmaker", "T1", 12800)
    assert how == "pushed from ISO 6400"
    np.testing.assert_allclose(prof.a, 2 * last.a, rtol=1e-12)
    np.testing.assert_allclose(prof.b, 4 * last.b, rtol=1e-12)
    prof, how = bq.profile_at_iso(table, "Testmaker", "T1", 25600)
    np.testing.assert_allclose(prof.a, 4 * last.a, rtol=1e-12)
    np.testing.assert_allclose(prof.b, 16 * last.b, rtol=1e-12)
    # the table itself still clamps: the push is the bench's
    assert table.lookup("Testmaker", "T1", 12800) == last
    prof, how = bq.profile_at_iso(table, "Testmaker", "T1", 100)
    assert how == "clamped to ISO 200" and prof == table.lookup("Testmaker", "T1", 200)


def _passed(bq, psnr):
    return [c["passed"] for c in bq.acceptance_checks(psnr)]


def test_acceptance_checks(bq):
    base = {"libraw+nlm": 30.0, "demosaicnet": 31.0, "demosaicnet+bm3d": 32.5}
    assert _passed(bq, dict(base, kpnt=32.0)) == [True, True, True]       # +2.0, +1.0, -0.5: all on the boundary's good side
    assert _passed(bq, dict(base, kpnt=31.99)) == [False, True, False]    # +1.99 and -0.51
    assert _passed(bq, dict(base, kpnt=31.0)) == [False, False, False]    # a tie does not beat demosaicnet
    assert _passed(bq, {"kpnt": 40.0, "libraw+nlm": 20.0, "demosaicnet": 41.0, "demosaicnet+bm3d": 30.0}) == [True, False, True]
    c = bq.acceptance_checks({"kpnt": 33.1, "libraw+nlm": 31.1, "demosaicnet+bm3d": 33.0})
    assert c[0]["passed"] is True and c[0]["delta"] == pytest.approx(2.0)   # float rounding of 33.1 - 31.1
    assert c[1]["passed"] is None and c[1]["delta"] is None                   # demosaicnet did not run
    assert c[2]["delta"] == pytest.approx(0.1)
    assert [c["passed"] for c in bq.acceptance_checks({"libraw+nlm": 30.0})] == [None, None, None]
    assert [bq.verdict(v) for v in (True, False, None)] == ["PASS", "FAIL", "n/a"]


def test_cases_are_seeded_per_photo_and_cell(bq):
    seeds = {bq.case_seed(s, iso, k) for s in ("bayer", "xtrans") for iso in (800, 3200, 12800) for k in range(50)}
    assert len(seeds) == 300
    from kpnt.color import find_camera

    cam = find_camera("Nikon D750")
    img = torch.rand(3, 36, 48, generator=torch.Generator().manual_seed(1))
    prof = NoiseProfile(a=[1e-3] * 3, b=[1e-5] * 3)
    c1 = bq.make_case(img, CFA.bayer("RGGB"), cam, prof, bq.case_seed("bayer", 800, 3))
    c2 = bq.make_case(img, CFA.bayer("RGGB"), cam, prof, bq.case_seed("bayer", 800, 3))
    c3 = bq.make_case(img, CFA.bayer("RGGB"), cam, prof, bq.case_seed("bayer", 800, 4))
    assert np.array_equal(c1["counts"], c2["counts"]) and not np.array_equal(c1["counts"], c3["counts"])
