#!/bin/bash
# Session 30, call 6: why the width-64 fwd+bwd call (kbench_common.time_ms: 2.02-2.05 ms) takes ~0.15 ms more
# than its kernels (1.88 ms): the host's time per call (no sync) against the GPU's, and time_ms with the GPU kept
# busy (torch.cuda._sleep) while the host enqueues the first call of each batch.  About 1 minute.
source "$(dirname "$0")/preamble.sh"
PYTHONPATH=$PWD:$PWD/tools timeout 120 python - > $OUT/host.txt 2>&1 <<'PY'
import statistics, time, torch
from kbench_common import COLOUR, SLOPE, make_weights, make_x, time_ms
from kpnt.ops import _cuda
P = 4 * 1024 * 1024
ws = make_weights(COLOUR, seed=11)
x = make_x(P, COLOUR[0], seed=12)
gy = torch.randn(P, COLOUR[2], device="cuda")
def fb():
    torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), ws, gy)
for P_small in (P,):
    for _ in range(5): fb()
    torch.cuda.synchronize()
    # host time per call: enqueue 5 calls behind a long GPU sleep, so no call waits on the GPU
    hs = []
    for _ in range(10):
        torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU spin
        t = time.perf_counter()
        for _ in range(5): fb()
        hs.append((time.perf_counter() - t) / 5 * 1e3)
        torch.cuda.synchronize()
    print(f"host enqueue per fwd+bwd call: median {statistics.median(hs):.3f} ms, min {min(hs):.3f}")
    print("time_ms (as the bench): %.3f ms [%.3f, %.3f]" % time_ms(fb, reps=20))
    gs = []
    for _ in range(20):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda._sleep(20_000_000)
        s.record()
        for _ in range(5): fb()
        e.record(); e.synchronize()
        gs.append(s.elapsed_time(e) / 5)
    print(f"GPU time per call, host ahead (sleep before the first): median {statistics.median(gs):.3f} ms, min {min(gs):.3f}")
PY
cat $OUT/host.txt
