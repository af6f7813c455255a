"""The CPU models of the warp-specialized weight gradient's hand-over (tools/wgrad_ws_protocol.py, the cp.async
form that ships; tools/wgrad_ws_bulk_protocol.py, the bulk-copy form behind KPNT_WS_BULK): the protocols as written
pass over random runs of lines and interleavings, and each deliberately broken one fails, so that the models can
tell a broken protocol from a sound one."""
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


def test_bulk_protocol_holds():
    model = load_tool("wgrad_ws_bulk_protocol")
    for case, (strips, height) in enumerate(_cases(model.strips_for, 120)):
        for m in (1, 3):
            assert model.run(strips, height, m, case) > 0


@pytest.mark.parametrize("brk", ["no-wait", "no-producer-barrier", "arrive-first", "no-empty-wait", "no-drain"])
def test_bulk_protocol_broken_fails(brk):
    model = load_tool("wgrad_ws_bulk_protocol")
    with pytest.raises(AssertionError):
        for case, (strips, height) in enumerate(_cases(model.strips_for, 300)):
            for seed in range(3):
                model.run(strips, height, 3, seed * 7919 + case, brk)
