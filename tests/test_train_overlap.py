"""The training loop's one-step-late read of graphed steps (kpnt.train.loop).

A CPU stand-in for GraphedStep records the order in which steps are queued
and read, so the loop's bookkeeping is tested without a GPU; the real graph
is tested against this in tests/cuda/test_train_overlap.py."""
from __future__ import annotations

import pytest
import torch

from kpnt.train.graph_step import StepOutput
from tests.test_train import _trainer

#: steps whose fake result says "skipped" (non-finite)
SKIPPED = {4}


class FakeGraphedStep:
    """Queues steps and answers each with loss = 1 / step (0 = skipped)."""

    def __init__(self, events: list):
        self.events = events
        self.queued = 0
        self.lrs = []

    def set_lr(self, lr: float) -> None:
        self.lrs.append(lr)

    def __call__(self, batch) -> StepOutput:
        self.queued += 1
        k = self.queued
        self.events.append(("queue", k))
        events = self.events

        class Output(StepOutput):
            def result(self):
                events.append(("read", k))
                return super().result()

        applied = 0.0 if k in SKIPPED else 1.0
        return Output(torch.tensor([1.0 / k, applied]))


def _run(tmp_path, overlap: bool, steps=8, until=None):
    tr = _trainer(tmp_path, steps=steps)          # val_every = ckpt_every = 3
    tr.cfg.overlap_steps = overlap
    events: list = []
    tr.graphed = FakeGraphedStep(events)
    hist = tr.run(progress=False, until=until)
    return tr, hist, events


@pytest.mark.parametrize("overlap", [True, False])
def test_history_is_the_same_whether_read_late_or_at_once(tmp_path, overlap):
    tr, hist, events = _run(tmp_path / str(overlap), overlap)
    assert hist.steps == [1, 2, 3, 5, 6, 7, 8]
    assert hist.losses == pytest.approx([1 / k for k in hist.steps])
    assert hist.skipped == [(4, "non-finite loss or gradient")]
    assert hist.val_steps == [3, 6, 8]
    assert tr.step == 8
    assert sorted(k for e, k in events if e == "read") == list(range(1, 9))   # every step read once


def test_late_read_queues_the_next_step_first(tmp_path):
    _, _, events = _run(tmp_path, overlap=True)
    # Step k is read after step k+1 was queued, except before a validation
    # or checkpoint (steps 3 and 6) and at the end (8), where it is read first.
    for k in (1, 2, 4, 5, 7):
        assert events.index(("queue", k + 1)) < events.index(("read", k)), k
    for k in (3, 6):
        assert events.index(("read", k)) < events.index(("queue", k + 1)), k
    assert events[-1] == ("read", 8)


def test_read_at_once_never_queues_ahead(tmp_path):
    _, _, events = _run(tmp_path, overlap=False)
    assert events == [x for k in range(1, 9) for x in (("queue", k), ("read", k))]


def test_an_interrupted_run_reads_its_last_step(tmp_path):
    tr, hist, events = _run(tmp_path, overlap=True, steps=8, until=5)
    assert tr.step == 5 and hist.steps == [1, 2, 3, 5]
    assert events[-1] == ("read", 5)
