#!/usr/bin/env python3
"""Which PyTorch ops a training step dispatches, by call site: the small
launches around kpnt's kernels (issue 14, point 2: the graphed X-Trans step
spends about 0.9 ms in ~190 elementwise, reduction and copy kernels).

    python tools/step_ops.py --arch shipped --sensor xtrans              # GPU, the fused backend
    python tools/step_ops.py --arch shipped --sensor xtrans --graphed-body   # the graph's body: + finite check, update
    python tools/step_ops.py --backend torch --device cpu --size 1 48 48 # the reference on a CPU

Why not the profiler: ``tools/step_breakdown.py --callers`` names the
innermost Python frame the profiler recorded for an op, and on the GPU
machine's torch it recorded none ("?" in every row since session 33).  Here
a dispatch mode sees every op as it is dispatched and walks the Python
stack itself; an op the autograd engine runs (a backward formula, no Python
frame of its own) is named by its autograd node and the line whose forward
call created that node (recorded by a function mode during the forward).

Counted: every dispatched op that can launch a kernel (views and
allocations are left out; an op may still launch none or several, so the
counts are a map of where launches come from, not their number).  Ops of
kpnt's custom-op namespace (its fused levels) are counted apart.  What kpnt
launches through its extension directly (the guide's kernels) is not
dispatched and not counted; the aten ops around it are.
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

ROOT = Path(__file__).resolve().parents[1]
#: Ops that allocate or alias without launching a kernel (besides views).
NO_KERNEL = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "detach", "lift_fresh",
             "resize_", "set_", "record_stream"}


#: Files of the modes' own machinery, never a call site.
PLUMBING = (__file__, "/torch/overrides.py", "/torch/utils/_python_dispatch.py", "/torch/_ops.py")


def python_site() -> tuple[str | None, str | None]:
    """``(kpnt, other)``: the innermost frame of kpnt's sources (or of tools/
    other than this file) on the Python stack, as 'path:line function', and
    the innermost frame of any other file, marked '(not kpnt)' (PyTorch's
    optimiser, say); each None where there is none."""
    first = None
    f = sys._getframe(1)
    while f is not None:
        name = f.f_code.co_filename
        if not any(name.endswith(p) for p in PLUMBING):
            if (f"{ROOT}/kpnt/" in name or f"{ROOT}/tools/" in name) and "/dispatch.py" not in name:
                return f"{Path(name).relative_to(ROOT)}:{f.f_lineno} {f.f_code.co_name}", first
            if first is None and "/torch/_dynamo/" not in name and not name.endswith("/torch/_compile.py"):
                short = name.split("site-packages/")[-1]
                first = f"(not kpnt) {short}:{f.f_lineno} {f.f_code.co_name}"
        f = f.f_back
    return None, first


def count_ops(step) -> tuple[Counter, Counter]:
    """``(other, custom)``: Counters of (site, op) over one call of ``step()``
    for the ops outside kpnt's custom-op namespace and for those in it."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils._python_dispatch import TorchDispatchMode

    created: dict = {}     # autograd node -> the Python site whose call created it (nodes kept alive here)

    class Creations(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in out if isinstance(out, (tuple, list)) else (out,):
                node = getattr(t, "grad_fn", None) if isinstance(t, torch.Tensor) else None
                if node is not None and node not in created:
                    created[node] = python_site()[0]
            return out

    other, custom = Counter(), Counter()

    class Dispatches(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            packet = func.overloadpacket
            ns, name = packet._qualified_op_name.split("::")
            if not (func.is_view or name in NO_KERNEL):
                site, other_file = python_site()
                node = torch._C._current_autograd_node()
                if site is None and node is not None:       # a backward formula: its node, and the forward line
                    site = f"[bwd {node.name()} of {created.get(node) or '?'}]"
                site = site or other_file or "?"
                (custom if ns == "kpnt" else other)[(site, f"{ns}::{name}")] += 1
            return func(*args, **(kwargs or {}))

    with Creations(), Dispatches():
        step()
    return other, custom


def table(counts: Counter, top: int) -> list[str]:
    """The ``top`` most frequent (site, op) rows and a total line."""
    rows = [f"  {n:5d}  {op:28s} {site}" for (site, op), n in counts.most_common(top)]
    rows.append(f"  {sum(counts.values()):5d}  in all, {len(counts)} (site, op) pairs")
    return rows


def main() -> int:
    from kbench_timing import add_step_case_args, step_case, train_step_fn

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_step_case_args(p, sensor="xtrans")
    p.add_argument("--backend", default="cuda", help="the model's backend (default cuda: the fused kernels)")
    p.add_argument("--device", default="cuda", help="default cuda; cpu with --backend torch")
    p.add_argument("--graphed-body", action="store_true",
                   help="count GraphedStep's captured body run eagerly (finite check, clip, update, commit) instead "
                        "of forward, loss, backward and PyTorch's Adam")
    p.add_argument("--top", type=int, default=40, help="rows to print (default 40)")
    args = p.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("step_ops.py: no CUDA GPU here: --backend torch --device cpu counts the reference's ops", file=sys.stderr)
        return 1
    N, H, W = args.size
    m, b = step_case(args.arch, args.sensor, N, H, W, args.backend, args.device)
    if args.graphed_body:
        from step_breakdown import graphed_fn

        _, step = graphed_fn(m, b)
    else:
        step = train_step_fn(m, b.x, b.cfa, b.noise, b.target)

    step()                                   # warm: caches and lazily built tables out of the count
    other, custom = count_ops(step)
    what = "GraphedStep's body" if args.graphed_body else "forward, loss, backward, Adam"
    print(f"== {args.arch} {args.sensor} {N}x{H}x{W}, backend {args.backend} on {args.device}: {what}")
    print("-- ops outside kpnt's custom ops, by call site:")
    print("\n".join(table(other, args.top)))
    print("-- kpnt's custom ops:")
    print("\n".join(table(custom, args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
