"""tools/step_ops.py's op counting by call site, on a CPU: a kpnt function's
forward ops at its own line, the autograd engine's backward ops named by
their node and the forward line that made it, views left out."""
import sys

import torch

from tool_loader import TOOLS, load_tool

sys.path.insert(0, str(TOOLS))
so = load_tool("step_ops")


def test_ops_are_counted_at_their_kpnt_line_and_backward_by_node():
    from kpnt.ref.mlp import mlp

    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 4, generator=g)
    ws = [torch.randn(8, 4, generator=g, requires_grad=True), torch.randn(8, 8, generator=g, requires_grad=True),
          torch.randn(3, 8, generator=g, requires_grad=True)]

    def step():
        mlp(x, ws, 0.01).square().sum().backward()

    other, custom = so.count_ops(step)
    assert not custom
    by_op = {}
    for (site, op), n in other.items():
        by_op.setdefault(op, []).append((site, n))
    # three matrix products in the forward, all on mlp's line of kpnt/ref/mlp.py
    fwd = [(s, n) for s, n in by_op["aten::mm"] if s.startswith("kpnt/ref/mlp.py:")]
    assert len(fwd) == 2 and sum(n for _, n in fwd) == 3 and all(s.endswith(" mlp") for s, _ in fwd), fwd
    # their backward: the engine's mm ops, named by the node and the forward line that made it
    bwd = [(s, n) for s, n in by_op["aten::mm"] if s.startswith("[bwd MmBackward0 of kpnt/ref/mlp.py:")]
    assert sum(n for _, n in bwd) == 5, by_op["aten::mm"]           # dW for 3 matrices, dX for the 2 upper ones
    assert any(s.startswith("[bwd LeakyReluBackward") for s, _ in by_op["aten::leaky_relu_backward"])
    # views (w.t(), the transposes of the backward) launch nothing and are not counted
    assert "aten::t" not in by_op and "aten::transpose" not in by_op and "aten::empty" not in by_op


def test_ops_outside_kpnt_are_named_by_their_own_file():
    p = torch.nn.Parameter(torch.ones(3))
    p.grad = torch.ones(3)
    opt = torch.optim.Adam([p], lr=0.1, foreach=False)
    other, _ = so.count_ops(opt.step)
    sites = {site for site, _ in other}
    assert any(s.startswith("(not kpnt) torch/optim/adam.py:") for s in sites), sites
