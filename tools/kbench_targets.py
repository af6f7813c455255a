"""Issue 14's acceptance targets against one run of tools/bench_kernels.py.

Points 2 and 3 ask for numbers that the bench measures in one run: the MLP's
throughput at widths 64 and 128 (point 3) and the shipped architecture's
graphed training step against the reference step (point 2).  This module
turns the run's timings into one table of measured value, target and verdict,
so that every run says where the issue stands.  Pure Python: no GPU needed to
read or test it.
"""
from __future__ import annotations

from typing import NamedTuple


class Target(NamedTuple):
    point: str      # the acceptance point
    what: str       # what is measured
    unit: str       # "Gpix/s" (from an MLP timing in ms) or "x" (a ratio of the run)
    key: str        # the timing's name (ms, over `pixels` rows) or the ratio's name
    least: float    # the target: at least this


TARGETS = (
    Target("3", "width-64 MLP forward", "Gpix/s", "fused fwd", 8.0),
    Target("3", "width-64 MLP forward + backward (dW)", "Gpix/s", "fused fwd+bwd (dW)", 2.0),
    Target("3", "width-128 MLP forward", "Gpix/s", "fused fwd w128", 2.0),
    Target("3", "width-128 MLP forward + backward (dW)", "Gpix/s", "fused fwd+bwd (dW) w128", 0.4),
    Target("2", "shipped graphed step / reference, Bayer", "x", "train bayer shipped: reference/graphed", 10.0),
    Target("2", "shipped graphed step / reference, X-Trans", "x", "train xtrans shipped: reference/graphed", 10.0),
)


class Row(NamedTuple):
    target: Target
    measured: float

    @property
    def met(self) -> bool:
        return self.measured >= self.target.least


def target_rows(timings_ms: dict[str, float], pixels: int, ratios: dict[str, float]) -> list[Row]:
    """The targets this run measured: an MLP timing (ms for ``pixels`` rows) as
    Gpix/s, or a ratio as it is.  Targets the run did not measure (``--no-model``
    has no training steps) are left out."""
    rows = []
    for t in TARGETS:
        if t.unit == "Gpix/s" and t.key in timings_ms:
            rows.append(Row(t, pixels / timings_ms[t.key] / 1e6))
        elif t.unit == "x" and t.key in ratios:
            rows.append(Row(t, ratios[t.key]))
    return rows


def format_rows(rows: list[Row]) -> str:
    """The table bench_kernels prints at the end of a run."""
    lines = ["== issue 14's targets, this run ==",
             f"{'point':<6s} {'what':<44s} {'measured':>10s} {'target':>8s}  verdict"]
    for r in rows:
        lines.append(f"{r.target.point:<6s} {r.target.what:<44s} {r.measured:10.2f} {r.target.least:8.2f}  "
                     f"{'met' if r.met else 'NOT met'} ({r.target.unit})")
    return "\n".join(lines)
