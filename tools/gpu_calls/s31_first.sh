#!/bin/bash
# For session 31's first call (written in session 30 after its device time ran out; about 6 minutes).  Session 30's
# last kernel change (the width-64 backward's proxy fence, 4419008) ran the CUDA tests, racecheck and point 3's rows
# (calls 7-8), not the full bench, memcheck or the identity check; this call runs them on the committed kernels.
# Carry .gpu30/base_kernels (dd1dbcc's kernels, before session 30; if missing:
#   mkdir -p .gpu30 && git archive dd1dbcc kernels | tar -x -C .gpu30 && mv .gpu30/kernels .gpu30/base_kernels).
#   tests     every CUDA test
#   bench     tools/bench_kernels.py in full: issue 14's acceptance run (all points' rows, 151 checks)
#   identity  tools/mlp_identity.py --models: the op's y, dx and dW, and one training step's output and gradients of
#             the shipped and wide models, on these kernels and on dd1dbcc's, bit for bit (point 4 carries over?)
#   memcheck  compute-sanitizer memcheck of tools/mlp_sanitize_run.py (widths 64 and 128, plain and grouped)
#   steps     tools/step_breakdown.py: what the shipped (and bf16-guide, wide) training step's GPU time is made of,
#             for point 2's decision
#   writebw   the device's write-only and read-only bandwidth (fill_ and sum over 8 GB): the ceiling the width-128
#             backward's two writing kernels (2.4 TB/s) are measured against; never run (session 30 dropped it)
# At most 8 files under $OUT.  PARTS (default "tests bench identity memcheck steps writebw") to run fewer.
PARTS=${PARTS:-tests bench identity memcheck steps writebw}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30 ;;
    bench)
        timeout 330 python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "^device|checks:|FAIL" $OUT/bench.txt | head -20
        grep -A10 "issue 14's targets" $OUT/bench.txt ;;
    identity)
        [ -d .gpu30/base_kernels ] || { echo "no .gpu30/base_kernels: carry it"; continue; }
        python tools/mlp_identity.py save --models /tmp/id_new.pt
        KPNT_KERNELS_DIR=$PWD/.gpu30/base_kernels KPNT_CACHE_DIR=/tmp/kc_base \
            python tools/mlp_identity.py save --models /tmp/id_base.pt
        python tools/mlp_identity.py compare /tmp/id_new.pt /tmp/id_base.pt > $OUT/identity.txt 2>&1
        cat $OUT/identity.txt ;;
    memcheck)
        timeout 200 compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|done" $OUT/memcheck.txt | tail -3 ;;
    steps)
        timeout 120 python tools/step_breakdown.py --archs shipped shipped-bf16 wide > $OUT/steps.txt 2>&1
        grep -E "^== |^\| [a-zA-Z]" $OUT/steps.txt | head -40 ;;
    writebw)
        timeout 60 python - > $OUT/writebw.txt 2>&1 <<'PY'
import torch
buf = torch.empty(1 << 31, dtype=torch.float32, device="cuda")  # 8 GB
for what, fn in (("write (fill_)", lambda: buf.fill_(1.0)), ("read (sum)", lambda: buf.sum())):
    for _ in range(3):
        fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(10):
        fn()
    e.record()
    torch.cuda.synchronize()
    ms = s.elapsed_time(e) / 10
    print(f"{what}: {buf.numel() * 4 / ms / 1e9:.2f} TB/s ({ms:.2f} ms for 8 GB)")
PY
        cat $OUT/writebw.txt ;;
    esac
done
