#!/bin/bash
# Session 32, call 2: the fused projection backward (kernels/guide_train.cu proj_backward_kernel, bfloat16, widths
# 32 / 64 / 128) built, checked and timed in one go.
#   tests     every CUDA test (the new ones: the kernel against float64, bad input, the network's routing)
#   memcheck  compute-sanitizer on the guide's training passes (now with the fused projection backward)
#   probe     tools/guide_train_probe.py: the shipped guides' fwd+bwd, bf16 with and without the new kernel
#   bench     tools/bench_kernels.py --train-steps-only --step-archs shipped,shipped-bf16 (point 2's rows)
#   steps     tools/step_breakdown.py --archs shipped-bf16
#   parity    shipped-bf16, 3 seeds a sensor on the new path (cut by the time left)
PARTS=${PARTS:-tests memcheck probe bench steps parity}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|Error|passed|failed" $OUT/tests.txt | head -30 ;;
    memcheck)
        timeout 100 compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py --guide --no-mlp \
            > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|done|ok" $OUT/memcheck.txt | tail -6 ;;
    probe)
        timeout 100 python tools/guide_train_probe.py > $OUT/probe.txt 2>&1; tail -16 $OUT/probe.txt ;;
    bench)
        timeout 150 python tools/bench_kernels.py --train-steps-only --step-archs shipped,shipped-bf16 --reps 10 \
            > $OUT/bench.txt 2>&1
        grep -E "^device|checks:|FAIL" $OUT/bench.txt | head -10
        grep -A8 "== train step 4x512" $OUT/bench.txt ;;
    steps)
        timeout 60 python tools/step_breakdown.py --archs shipped-bf16 --top 12 > $OUT/steps.txt 2>&1
        grep -E "^== |^\| [a-zA-Z]|^ +[0-9.]+ ms x" $OUT/steps.txt | cut -c1-150 | head -30 ;;
    parity)
        timeout ${PARITY_S:-150} python tools/bench_kernels.py --parity-only --parity-archs shipped-bf16 --parity-seeds 3 \
            --parity-first-seed 4 > $OUT/parity.txt 2>&1
        grep -E "parity|checks:" $OUT/parity.txt | tail -12 ;;
    esac
done
true
