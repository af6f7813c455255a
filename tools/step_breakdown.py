#!/usr/bin/env python3
"""What a fused training step's GPU time is made of (issue 14, point 2: the
shipped architecture's graphed step against the reference): the kernels of
one eager fused step (forward, SMAPE, backward, Adam: the kernels the CUDA
graph replays), grouped into kpnt's kernels by kind, cuDNN's convolutions
(the guide), the optimizer and the rest, with each group's share.

    python tools/step_breakdown.py                          # shipped, both sensors, 4 x 512 x 512
    python tools/step_breakdown.py --archs shipped shipped-bf16 wide --top 12
    python tools/step_breakdown.py --archs shipped-bf16 --callers 30   # who launches the small kernels
    python tools/step_breakdown.py --archs shipped-bf16 --graphed      # the GraphedStep replay's kernels

``--callers N`` lists the N call sites (the innermost kpnt source line of the
op that launched a kernel; for a backward kernel, the forward line whose
autograd node ran it) holding most of the "other" group's time and launches.
``--graphed`` profiles replays of kpnt.train.graph_step.GraphedStep (the
step point 2 times, with its finite check, clipping and masked commit)
instead of the eager step; with ``--callers`` the call sites are those of
the captured step run eagerly (a replay's kernels have no ops to name).

Architectures are tools/kbench_timing.py's STEP_ARCHS; batches are the
bench's (kbench_checks.step_batch).  Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# Kernel-name patterns, first match wins: (group, substrings of the demangled name).  The colour and front
# levels run their MLPs inside kpnt's MLP kernels (other input and output policies): those count as MLP time.
GROUPS = (
    ("kpnt MLP backward", ("mlp_bwd", "mlp_dw")),
    ("kpnt MLP forward", ("mlp_fwd",)),
    ("kpnt front level (taps, adjoint)", ("front_",)),
    ("kpnt colour level", ("colour_",)),
    # kpnt's weight gradient of the float32 guide's 3x3s (kernels/guide_wgrad.cu), apart from cuDNN's passes
    ("kpnt guide 3x3 weight gradient", ("wgrad_tf32_kernel", "wgrad_wgmma_kernel", "wgrad_wgmma_ws_kernel")),
    ("kpnt guide", ("guide_", "up_block", "pyramid", "relu_grad_sum", "bias_relu", "proj_backward", "proj_forward")),
    ("optimizer (Adam)", ("adam", "multi_tensor", "foreach")),   # kpnt's adam_kernel too, before "kpnt other"
    ("kpnt other", ("kpnt::",)),
    ("cuDNN / cuBLAS convolutions and GEMMs", ("conv", "cudnn", "xmma", "implicit_gemm", "cutlass", "gemm", "wgrad",
                                              "dgrad", "fprop", "nchwToNhwc", "nhwcToNchw", "nvjet")),
)
OTHER = "other (elementwise, reductions, copies)"


def group_of(name: str) -> str:
    """The GROUPS entry a kernel name falls in (case-insensitive), else OTHER."""
    low = name.lower()
    for group, keys in GROUPS:
        if any(k.lower() in low for k in keys):
            return group
    return OTHER


def grouped(kernels: list[tuple[str, float, float]]) -> list[tuple[str, float, float]]:
    """(group, ms, launches) summed over kernels (name, ms, launches), most time first."""
    acc: dict[str, list[float]] = {}
    for name, ms, n in kernels:
        a = acc.setdefault(group_of(name), [0.0, 0.0])
        a[0] += ms
        a[1] += n
    return sorted(((g, ms, n) for g, (ms, n) in acc.items()), key=lambda r: -r[1])


def _ancestor(evt, test):
    """The first of ``evt`` and its CPU parents for which ``test`` holds, or None."""
    while evt is not None:
        if test(evt):
            return evt
        evt = evt.cpu_parent
    return None


def _kpnt_frame(text: str) -> bool:
    return ("kpnt/" in text or "tools/" in text) and "dispatch.py" not in text


def _frame(evt) -> str | None:
    """The innermost kpnt (or tools) Python frame of a profiler event (its
    recorded stack, or the frames with_stack records as its parent events);
    else its innermost Python frame of any file, marked "(not kpnt)"; else
    None.  (Session 35's H100 runs named no frame for the small kernels'
    ops: the fallback shows what the profiler recorded there.)"""
    for entry in evt.stack or ():
        if _kpnt_frame(entry):
            return entry
    parent = _ancestor(evt.cpu_parent, lambda e: ".py(" in e.name and _kpnt_frame(e.name))
    if parent is not None:
        return parent.name
    entries = list(evt.stack or ())
    if entries:
        return f"(not kpnt) {entries[0]}"
    parent = _ancestor(evt.cpu_parent, lambda e: ".py(" in e.name)
    return None if parent is None else f"(not kpnt) {parent.name}"


def _annotation(evt) -> str | None:
    """The optimizer's profiler range an event ran in (``Optimizer.step#Adam.step``), or None."""
    scope = _ancestor(evt, lambda e: e.name.startswith("Optimizer."))
    return None if scope is None else scope.name


def _node(evt):
    """The autograd node event (backward function) an event ran under, or None."""
    return _ancestor(evt, lambda e: e.scope == 1)   # RecordScope::BACKWARD_FUNCTION


def callers(fn, calls: int = 2, groups=(OTHER,)) -> list[tuple[str, float, float]]:
    """``(call site, ms per call, launches per call)`` of the kernels of
    ``fn()`` in ``groups``, most time first: the site is the op's innermost
    kpnt frame and the op; a backward op without one of its own (autograd's
    engine runs it) gets its node and the frame of the forward op that made
    the node."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA], with_stack=True) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    events = prof.events()
    forward_frames = {}
    for evt in events:
        if evt.sequence_nr >= 0 and _node(evt) is None:
            forward_frames.setdefault((evt.sequence_nr, evt.thread), _frame(evt))
    acc: dict[str, list[float]] = {}
    for evt in events:
        for k in getattr(evt, "kernels", ()):
            if group_of(k.name) not in groups:
                continue
            node, frame = _node(evt), _frame(evt)
            own = frame is not None and not frame.startswith("(not kpnt)")   # a kpnt line of its own
            site = f"{frame or '?'}  {evt.name}"
            scope = _annotation(evt)
            if scope:
                site += f"  [in {scope}]"
            if node is not None:
                name = node.name.replace("autograd::engine::evaluate_function: ", "")
                site += f"  [bwd {name}" + ("" if own else f" of {forward_frames.get((node.sequence_nr, node.fwd_thread))}") + "]"
            a = acc.setdefault(site, [0.0, 0.0])
            a[0] += k.duration / 1e3 / calls
            a[1] += 1 / calls
    return sorted(((s, ms, n) for s, (ms, n) in acc.items()), key=lambda r: -r[1])


def graphed_fn(m, batch):
    """``(replay, body)``: a GraphedStep of ``m`` on ``batch`` (captured now)
    as a callable, and the step it captured run eagerly (its ``_body`` on the
    graph's static inputs, masked commit included: what ``--callers``
    attributes, since a replay's kernels have no ops to name)."""
    from kbench_checks import step_loss as bench_loss
    from kpnt.train.graph_step import GraphedStep, adam_for_graphs

    opt = adam_for_graphs(m.parameters(), lr=1e-5)
    gs = GraphedStep(m, opt, bench_loss, clip=1.0, example_batch=batch)
    e = gs._entry(batch)
    return (lambda: gs(batch)), (lambda: gs._body(e.x, e.target, e.noise, e.valid, batch.cfa, masked=True))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", nargs="+", default=["shipped"])
    p.add_argument("--sensors", nargs="+", default=None, help="default: both mosaic kinds")
    p.add_argument("--size", type=int, nargs=3, default=[4, 512, 512], metavar=("N", "H", "W"))
    p.add_argument("--top", type=int, default=8, help="also list this many single kernels")
    p.add_argument("--callers", type=int, default=0, metavar="N",
                   help="also list the N call sites launching most of the 'other' group (with --graphed: of the "
                        "captured step run eagerly)")
    p.add_argument("--graphed", action="store_true", help="profile the GraphedStep replay, not the eager step")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("step_breakdown.py: needs a CUDA GPU", file=sys.stderr)
        return 1
    from kbench_common import gpu_kernels
    from kbench_timing import STEP_ARCHS, step_case, train_step_fn
    from kpnt.mosaic.kinds import MOSAIC_KINDS

    N, H, W = args.size
    for arch in args.archs:
        if arch not in STEP_ARCHS:
            print(f"step_breakdown.py: unknown architecture {arch!r} (one of {', '.join(STEP_ARCHS)})", file=sys.stderr)
            return 2
        for sensor in args.sensors or MOSAIC_KINDS:
            m, b = step_case(arch, sensor, N, H, W)
            if args.graphed:
                step, body = graphed_fn(m, b)
            else:
                step = body = train_step_fn(m, b.x, b.cfa, b.noise, b.target)
            for _ in range(3):
                step()
            kernels = gpu_kernels(step)
            total = sum(ms for _, ms, _ in kernels)
            print(f"\n== {arch} {sensor} {N}x{H}x{W}{' graphed' if args.graphed else ''}: GPU kernel time "
                  f"{total:.2f} ms a step, "
                  f"{sum(n for _, _, n in kernels):.0f} launches")
            print("| group | ms | launches | share |\n| --- | ---: | ---: | ---: |")
            for g, ms, n in grouped(kernels):
                print(f"| {g} | {ms:.2f} | {n:.0f} | {100 * ms / total:.1f} % |")
            for name, ms, n in kernels[:args.top]:
                print(f"  {ms:7.3f} ms x {n:4.0f}  {name[:110]}")
            if args.callers:
                sites = callers(body)
                print(f"-- call sites of the '{OTHER}' group: {len(sites)} sites, "
                      f"{sum(ms for _, ms, _ in sites):.2f} ms, {sum(n for _, _, n in sites):.0f} launches")
                for site, ms, n in sites[:args.callers]:
                    print(f"  {ms:7.3f} ms x {n:4.0f}  {site[:160]}")
            del m, step
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
