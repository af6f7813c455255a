"""The CPU model of the warp-specialized weight gradient's hand-over (tools/wgrad_ws_protocol.py): the protocol as
the kernel runs it passes over random runs of lines and interleavings, and each deliberately broken one fails, so
that the model can tell a broken protocol from a sound one."""
import random

import pytest
from tool_loader import load_tool


def _cases(strips_for, n, seed=3):
    rng = random.Random(seed)
    return [strips_for(rng) for _ in range(n)]


def test_cp_async_protocol_holds():
    model = load_tool("wgrad_ws_protocol")
    for case, strips in enumerate(_cases(model.strips_for, 150)):
        for seed in range(2):
            assert model.run(strips, seed * 7919 + case) > 0


@pytest.mark.parametrize("brk", ["no-empty-wait", "no-copy-wait", "arrive-first", "no-drain"])
def test_cp_async_protocol_broken_fails(brk):
    model = load_tool("wgrad_ws_protocol")
    with pytest.raises(AssertionError):
        for case, strips in enumerate(_cases(model.strips_for, 300)):
            for seed in range(3):
                model.run(strips, seed * 7919 + case, brk)
