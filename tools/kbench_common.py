"""Shared pieces of tools/bench_kernels.py: constants, input builders, the
float64 references, timing, and the check ledger (:class:`Checks`)."""
from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from kpnt.mosaic.kinds import BAYER as _BAYER, XTRANS as _XTRANS  # noqa: E402
from kpnt.testing import TOLERANCES, mlp_f16_rounded, rel_error as rel  # noqa: E402



#: Sensor kinds by the registry's names (kpnt.mosaic.kinds).
BAYER, XTRANS = _BAYER.name, _XTRANS.name


SLOPE = 0.01


COLOUR = [32, 64, 16, 6]


#: The shipped models' colour MLP (width 128).
COLOUR128 = [32, 128, 16, 6]


FRONT = [32, 64, 32, 4]


TOL_FWD = TOLERANCES["forward"]


TOL_GRAD = TOLERANCES["grad"]


def make_weights(dims, groups=None, device="cuda", seed=0):
    """Kaiming-scaled random weights (keeps activations O(1) through the layers)."""
    n_in, hidden, n_out, n_hidden = dims
    g = torch.Generator(device="cpu").manual_seed(seed)
    shapes = [(hidden, n_in)] + [(hidden, hidden)] * (n_hidden - 1) + [(n_out, hidden)]
    lead = () if groups is None else (groups,)
    return [
        (torch.randn(*lead, *s, generator=g) * math.sqrt(2.0 / s[1])).to(device).requires_grad_()
        for s in shapes
    ]


def make_x(P, n_in, device="cuda", seed=1):
    g = torch.Generator(device="cpu").manual_seed(seed)
    x = torch.randn(P, n_in, generator=g)
    x[:, -1] = 1.0  # the constant feature that plays the bias role
    return x.to(device)


def torch_mlp(x, ws, slope=SLOPE):
    h = x
    for w in ws[:-1]:
        h = F.leaky_relu(h @ w.t(), slope)
    return h @ ws[-1].t()


def torch_mlp_f16(x, ws, slope=SLOPE):
    """The f16-rounding float64 reference (see :func:`kpnt.testing.mlp_f16_rounded`)."""
    return mlp_f16_rounded(x, ws, slope)


#: Profiler names of ranges, not kernels, that appear on the GPU timeline.
ANNOTATIONS = ("Optimizer.", "ProfilerStep")


def gpu_kernels(fn, calls: int = 3) -> list[tuple[str, float, float]]:
    """The GPU kernels of ``fn()`` by the torch profiler, most time first:
    ``(name, ms per call, launches per call)`` over ``calls`` calls (after
    the caller's warm-up)."""
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    events = prof.key_averages()
    attr = "device_time_total" if events and hasattr(events[0], "device_time_total") else "cuda_time_total"
    # The optimizer's record_function range ("Optimizer.step#Adam.step") shows on the GPU timeline as a user
    # annotation spanning its kernels: counting it counted Adam twice (session 31's first step breakdown).
    kernels = [e for e in events if getattr(e, attr, 0) > 0 and e.device_type.name != "CPU"
               and not e.key.startswith(ANNOTATIONS)]
    rows = [(e.key, getattr(e, attr) / 1e3 / calls, e.count / calls) for e in kernels]
    return sorted(rows, key=lambda r: -r[1])


def poison_cache(nbytes=1 << 30):
    """Fill freed allocator blocks with NaN so unwritten outputs show up."""
    t = torch.empty(nbytes // 4, device="cuda")
    t.fill_(float("nan"))
    del t


def time_ms(fn, reps=30, warmup=5, batch=5):
    """Median over `reps` of the CUDA-event time of `batch` back-to-back calls,
    per call (ms), after warm-up.  Batching lets the host enqueue ahead, so
    Python/dispatch overhead only counts where it exceeds the GPU time (as in
    a training loop); a per-call sync would add it to every sample."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(batch):
            fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / batch)
    return statistics.median(times), min(times), max(times)


class Checks:
    def __init__(self):
        self.rows = []
        self.failed = 0

    def add(self, name, value, tol, note=""):
        ok = math.isfinite(value) and value <= tol
        self.failed += not ok
        self.rows.append((name, value, tol, "ok" if ok else "FAIL", note))
        print(f"  check {name:<48s} {value:10.3e}  (tol {tol:.0e}) {'ok' if ok else 'FAIL'} {note}", flush=True)

    def flag(self, name, ok, note=""):
        self.failed += not ok
        self.rows.append((name, float(not ok), 0.0, "ok" if ok else "FAIL", note))
        print(f"  check {name:<48s} {'ok' if ok else 'FAIL'} {note}", flush=True)

    def report(self):
        """The closing count of passed checks and every failure again."""
        print(f"\n== checks: {len(self.rows) - self.failed}/{len(self.rows)} ok ==")
        for name, v, tol, st, note in self.rows:
            if st != "ok":
                print(f"FAILED {name}: {v:.3e} (tol {tol:.0e}) {note}")


def f16_mlp64(x, ws, slope):
    """:func:`torch_mlp_f16` with the reference MLP's signature (for the model's mlp_fn)."""
    return torch_mlp_f16(x, ws, slope)


def grad_rel(got, want):
    return max(rel(a, b) for a, b in zip(got, want))


def bench_cfa(sensor):
    """The reference phase of a sensor kind (kpnt.mosaic.cfa.reference_cfa)."""
    from kpnt.mosaic.cfa import reference_cfa

    return reference_cfa(sensor)


def model_inputs(sensor, N, H, W, seed):
    g = torch.Generator("cuda").manual_seed(seed)
    # smooth-ish content plus noise (pure noise would make every detail level white)
    base = F.interpolate(torch.rand(N, 3, H // 16 + 2, W // 16 + 2, device="cuda", generator=g), size=(H, W),
                         mode="bilinear", align_corners=False) * 0.6
    cfa = bench_cfa(sensor)
    col = torch.from_numpy(cfa.colour_map(H, W)).to("cuda").long().expand(N, 1, H, W)
    x = base.gather(1, col) + torch.randn(N, 1, H, W, device="cuda", generator=g) * 0.02
    noise = torch.tensor([[2e-3] * 3, [1e-5] * 3], device="cuda").expand(N, 2, 3).contiguous()
    return x, cfa, noise, base


def smape_loss(out, target):
    return ((out - target).abs() / (out.abs() + target.abs() + 1e-3)).mean()
