#!/bin/bash
# Session 33, call 2: training's small launches onto kernels (the data pyramid on the fused down/up; up and
# up_block with a gradient on their kernels and new adjoint kernels; the bf16 projection forward in one kernel),
# built, checked and timed in one go.
#   tests     every CUDA test (new: both adjoints against float64 autograd, the projection forward against
#             float64, the switches, bad input)
#   memcheck  compute-sanitizer on the guide's training passes (the projection forward included) and the two
#             adjoint kernels (tools/mlp_sanitize_run.py --guide --adjoints --no-mlp)
#   bench     bench_kernels.py --train-steps-only, shipped and shipped-bf16 (point 2's rows)
#   callers   step_breakdown.py --callers after the change
#   probe     guide_train_probe.py (bf16 with and without the projection forward)
#   full      the full bench_kernels.py --no-compile --parity-steps 0 (not in the default PARTS: no device time)
PARTS=${PARTS:-tests bench memcheck callers probe}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 100 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|Error|passed|failed" $OUT/tests.txt | head -30 ;;
    memcheck)
        timeout 90 compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py --guide --adjoints --no-mlp \
            > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|ok|done" $OUT/memcheck.txt | tail -8 ;;
    bench)
        timeout 170 python tools/bench_kernels.py --train-steps-only --step-archs shipped,shipped-bf16 --reps 10 \
            > $OUT/bench.txt 2>&1
        grep -E "^device|checks:|FAIL" $OUT/bench.txt | head -10
        grep -A8 "== train step 4x512" $OUT/bench.txt ;;
    callers)
        timeout 90 python tools/step_breakdown.py --archs shipped-bf16 shipped --top 12 --callers 30 \
            > $OUT/callers.txt 2>&1
        grep -E "^== |^-- |^\| other" $OUT/callers.txt | head -20 ;;
    probe)
        timeout 50 python tools/guide_train_probe.py --reps 5 > $OUT/probe.txt 2>&1; tail -18 $OUT/probe.txt ;;
    full)
        timeout ${FULL_S:-300} python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 \
            > $OUT/full.txt 2>&1
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -B2 -A14 "targets" $OUT/full.txt | tail -20 ;;
    esac
done
true
