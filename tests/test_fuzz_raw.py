"""Seeded corruptions of kpnt's own DNGs: every one is refused with a typed
line or denoised to finite output rawpy reads back (issue 17 acceptance 1;
``tools/fuzz_raw.py --cases 10000`` is the long run)."""
import collections

import numpy as np
import pytest
import torch

from kpnt.fuzz import BAD_OUTCOMES, MUTATIONS, load_models, make_sources, mutate, run_case

CASES = 240  # ~0.1 s of CPU each (read, blind noise estimate, denoise, write, read back)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz")
    sources = [p.read_bytes() for p in make_sources(folder)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield folder, sources, load_models()
    torch.set_num_threads(threads)


def test_sources_are_accepted(setup):
    folder, sources, models = setup
    for data in sources:
        assert run_case(data, folder / "src.dng", models)[0] == "accepted-finite"


def test_mutations_are_reproducible(setup):
    _, sources, _ = setup
    for kind in MUTATIONS:
        a = mutate(sources[0], np.random.default_rng(5), kind)
        b = mutate(sources[0], np.random.default_rng(5), kind)
        assert a == b and a[0] != sources[0], kind


def test_seeded_corruptions_are_typed_or_finite(setup):
    folder, sources, models = setup
    outcomes, bad = collections.Counter(), []
    kinds = collections.Counter()
    for i in range(CASES):
        rng = np.random.default_rng([20261203, i])
        data, desc = mutate(sources[i % len(sources)], rng, MUTATIONS[i % len(MUTATIONS)])
        kinds[desc.split()[0]] += 1
        outcome, detail = run_case(data, folder / f"case{i}.dng", models)
        outcomes[outcome] += 1
        if outcome in BAD_OUTCOMES or outcome == "failed-typed":
            bad.append((i, desc, outcome, detail))
        if outcome == "refused-typed":
            assert "\n" not in detail and f"case{i}.dng" in detail, detail
    assert not bad, bad[:5]
    # the corpus exercises both paths and every mutation
    assert outcomes["refused-typed"] > CASES // 5 and outcomes["accepted-finite"] > CASES // 5, outcomes
    assert len(kinds) >= len(MUTATIONS) - 1, kinds


def test_supervisor_counts_crashes_and_hangs(tmp_path):
    """tools/fuzz_raw.py replaces a worker that crashed (SIGSEGV) or hung and
    counts the case; the run fails (exit 1) and says so."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    tool = Path(__file__).resolve().parents[1] / "tools" / "fuzz_raw.py"
    res = subprocess.run([sys.executable, str(tool), "--cases", "4", "--timeout", "2", "--simulate", "1=crash,2=hang",
                          "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stdout + res.stderr
    counts = json.loads((tmp_path / "r.json").read_text())["counts"]
    assert counts.get("crash") == 1 and counts.get("hang") == 1 and sum(counts.values()) == 4, counts
    assert "FAIL: 2 case(s)" in res.stdout and "worker died (exit code -11)" in res.stdout
