"""tools/kbench_targets.py: issue 14's targets read from one bench run's timings and ratios."""
from tool_loader import load_tool

kt = load_tool("kbench_targets")

P = 1 << 22


def test_mlp_timings_become_gpix_per_s_and_are_judged():
    ms = {"fused fwd": P / 9.0e6, "fused fwd+bwd (dW)": P / 1.9e6, "fused fwd w128": P / 2.2e6,
          "fused fwd+bwd (dW) w128": P / 0.3e6}
    rows = {r.target.key: r for r in kt.target_rows(ms, P, {})}
    assert set(rows) == set(ms)                      # no ratios in the run: point 2 left out
    assert abs(rows["fused fwd"].measured - 9.0) < 1e-9 and rows["fused fwd"].met
    assert not rows["fused fwd+bwd (dW)"].met          # 1.9 < 2
    assert rows["fused fwd w128"].met and not rows["fused fwd+bwd (dW) w128"].met


def test_ratios_are_judged_as_they_are_and_the_table_says_so():
    ratios = {"train bayer shipped: reference/graphed": 2.02, "train xtrans shipped: reference/graphed": 10.0}
    rows = kt.target_rows({}, P, ratios)
    assert [(r.target.point, r.met) for r in rows] == [("2", False), ("2", True)]   # 10.0 meets "at least 10"
    text = kt.format_rows(rows)
    assert "NOT met" in text and text.count(" met (x)") == 2
