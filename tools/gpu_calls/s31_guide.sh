#!/bin/bash
# Session 31, call 2: the projection guide's training path on the fused backend (kernels/guide_train.cu,
# kpnt/ref/guide_backward.py, kpnt/ops/_cuda/guide_train.py), built, checked and timed in one go.
#   tests   the new CUDA tests and the ones the guide or the graphed step touch
#   probe   tools/guide_train_probe.py: the shipped guides' fwd+bwd by path, errors vs float64
#   steps   tools/step_breakdown.py for shipped and shipped-bf16 (now on the fused guide)
#   bench   tools/bench_kernels.py --train-steps-only --step-archs shipped,shipped-bf16 (point 2's rows)
PARTS=${PARTS:-tests probe steps bench}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider -x tests/cuda/test_guide_train.py \
            tests/cuda/test_guide_precision.py tests/cuda/test_graph_step.py tests/cuda/test_cuda_backend.py \
            > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|Error|assert|passed|failed" $OUT/tests.txt | head -30 ;;
    probe)
        timeout 150 python tools/guide_train_probe.py > $OUT/probe.txt 2>&1; cat $OUT/probe.txt | tail -16 ;;
    steps)
        timeout 100 python tools/step_breakdown.py --archs shipped shipped-bf16 > $OUT/steps.txt 2>&1
        grep -E "^== |^\| [a-zA-Z]|^ +[0-9.]+ ms x" $OUT/steps.txt | head -60 ;;
    bench)
        timeout 200 python tools/bench_kernels.py --train-steps-only --step-archs shipped,shipped-bf16 --reps 10 \
            > $OUT/bench.txt 2>&1
        grep -E "^device|checks:|FAIL" $OUT/bench.txt | head -10
        grep -A8 "== train step 4x512" $OUT/bench.txt ;;
    esac
done
