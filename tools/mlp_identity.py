#!/usr/bin/env python3
"""Whether two builds of the fused kernels compute the same bits: the plain
and grouped MLP op's output y, dL/dx and every dL/dW (widths 64 and 128,
100 003 rows, fixed seeds), and with ``--models`` the output and every
parameter's gradient of one training step of the shipped and the wide
architecture (both sensors, 1 x 256 x 256, cuDNN deterministic), saved by
one build and compared with another's.

    python tools/mlp_identity.py save /tmp/new.pt
    KPNT_KERNELS_DIR=old/kernels KPNT_CACHE_DIR=/tmp/kc_old python tools/mlp_identity.py save /tmp/old.pt
    python tools/mlp_identity.py compare /tmp/new.pt /tmp/old.pt
    python tools/mlp_identity.py alerts       # which ops of the model steps are nondeterministic

``alerts`` runs the ``--models`` steps under
``torch.use_deterministic_algorithms(True, warn_only=True)`` and lists the ops
PyTorch flags as having no deterministic implementation (session 31: the
X-Trans steps differ from run to run by up to 8.4e-9 on one build, the
Bayer steps do not).

A change that only reorders how the kernels issue their work (descriptors,
barriers, staging) should leave every tensor bitwise equal; one that changes
an f32 summation order will not, and then the bench's checks against the
float64 references are the measure.  Needs a CUDA GPU for ``save``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from kbench_common import SLOPE, make_weights, make_x  # noqa: E402

SHAPES = ([32, 64, 16, 6], [32, 64, 32, 4], [32, 128, 16, 6], [32, 128, 80, 4])
ROWS = 100_003


def compute() -> dict[str, list[torch.Tensor]]:
    """Every case's tensors (on the CPU), in a fixed order."""
    from kpnt.ops import _cuda

    out = {}
    for dims in SHAPES:
        gen = torch.Generator("cuda").manual_seed(7)
        ws = make_weights(dims, seed=5)
        x = make_x(ROWS, dims[0], seed=6).requires_grad_()
        y = _cuda.fused_mlp(x, ws, SLOPE)
        g = torch.autograd.grad(y, [x, *ws], torch.randn(ROWS, dims[2], device="cuda", generator=gen))
        out[f"{dims} plain"] = [y.detach(), *g]
        wg = make_weights(dims, groups=4, seed=3)
        cls = torch.randint(0, 3, (ROWS,), device="cuda", generator=gen)
        yg = _cuda.fused_mlp_grouped(make_x(ROWS, dims[0], seed=9), cls, wg, SLOPE)
        gg = torch.autograd.grad(yg, wg, torch.randn(ROWS, dims[2], device="cuda", generator=gen))
        out[f"{dims} grouped"] = [yg.detach(), *gg]
    return {k: [t.cpu() for t in v] for k, v in out.items()}


def compute_models() -> dict[str, list[torch.Tensor]]:
    """Output and parameter gradients (named order) of one fused training step
    of each (architecture, sensor): the colour and front levels' kernels, the
    guide and the rest of the model as training runs them."""
    from kbench_checks import step_batch, step_cfas
    from kbench_timing import step_model
    from kbench_common import smape_loss
    from kpnt.mosaic.kinds import MOSAIC_KINDS

    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    out = {}
    for arch in ("shipped", "wide"):
        for sensor in MOSAIC_KINDS:
            torch.manual_seed(0)
            m = step_model(arch, sensor, "cuda")
            b = step_batch(sensor, step_cfas(sensor)[0], 1, 256, 256, seed=3)
            y = m(b.x, b.cfa, b.noise)
            smape_loss(y, b.target).backward()
            named = sorted((n, p.grad) for n, p in m.named_parameters() if p.grad is not None)
            out[f"{arch} {sensor} step"] = [y.detach(), *(g for _, g in named)]
    return {k: [t.cpu() for t in v] for k, v in out.items()}


#: What PyTorch's nondeterminism alert says (the op's name comes before it).
_ALERT = " does not have a deterministic implementation"


def nondeterministic_ops(fn) -> dict[str, int]:
    """{op: times flagged} while ``fn()`` runs with PyTorch's deterministic
    mode in warn-only form (restored afterwards): the ops whose CUDA
    implementation has no deterministic version (atomics)."""
    import warnings

    was, was_warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    counts: dict[str, int] = {}
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)
    for w in caught:
        text = str(w.message)
        if _ALERT in text:
            op = text.split(_ALERT)[0].strip()
            counts[op] = counts.get(op, 0) + 1
    return counts


def bitwise_equal(u: torch.Tensor, v: torch.Tensor) -> bool:
    """Same shape, dtype and bits (torch.equal compares values: it calls -0.0
    and 0.0 equal and a NaN unequal to itself)."""
    if u.shape != v.shape or u.dtype != v.dtype:
        return False
    as_int = {2: torch.int16, 4: torch.int32, 8: torch.int64}[u.element_size()]
    return torch.equal(u.contiguous().view(as_int), v.contiguous().view(as_int))


def compare(a: dict, b: dict) -> bool:
    """Print one line a case; True if every tensor of every case is bitwise equal."""
    all_same = a.keys() == b.keys()
    for k in a:
        if k not in b:
            print(f"{k:28s} missing from the second file")
            continue
        same = [bitwise_equal(u, v) for u, v in zip(a[k], b[k])]
        diff = max(float((u.double() - v.double()).abs().max()) if u.shape == v.shape else float("inf")
                   for u, v in zip(a[k], b[k]))
        print(f"{k:28s} tensors {len(same)}, bitwise equal {sum(same)}, max abs diff {diff:.3e}")
        all_same &= all(same) and len(a[k]) == len(b[k])
    return all_same


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("save", help="compute with this process's kernels and save")
    s.add_argument("out", type=Path)
    s.add_argument("--models", action="store_true", help="also one training step of the shipped and wide models")
    sub.add_parser("alerts", help="list the nondeterministic ops of the --models steps")
    c = sub.add_parser("compare", help="compare two saved files")
    c.add_argument("a", type=Path)
    c.add_argument("b", type=Path)
    args = p.parse_args()
    if args.cmd == "save":
        if not torch.cuda.is_available():
            print("mlp_identity.py save: needs a CUDA GPU", file=sys.stderr)
            return 1
        torch.save({**compute(), **(compute_models() if args.models else {})}, args.out)
        print(f"saved to {args.out}")
        return 0
    if args.cmd == "alerts":
        if not torch.cuda.is_available():
            print("mlp_identity.py alerts: needs a CUDA GPU", file=sys.stderr)
            return 1
        ops = nondeterministic_ops(compute_models)
        for op, n in sorted(ops.items(), key=lambda kv: -kv[1]):
            print(f"nondeterministic: {op} ({n} calls)")
        print(f"{len(ops)} nondeterministic op(s) in the shipped and wide steps")
        return 0
    same = compare(torch.load(args.a), torch.load(args.b))
    print("bitwise equal" if same else "NOT bitwise equal")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
