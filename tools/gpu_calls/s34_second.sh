#!/bin/bash
# Session 34's second call: the switches turned on after its first call (FUSED_PROJ_TF32: the float32 guide's
# projection blocks on the TF32 kernels; FUSED_ADAM: GraphedStep's Adam fused, replacing the capturable foreach
# Adam's ~2 launches a parameter).
#   tests    every CUDA test on these defaults
#   full     the full bench_kernels.py --no-compile --parity-steps 0 (points 1, 2, 3, 5 in one run, point 2's rows
#            among them; its 151 checks last ran in session 31)
#   steps    point 2's rows alone (bench_kernels.py --train-steps-only, shipped and shipped-bf16; not in the default
#            PARTS: full has them)
#   graphed  the graphed Bayer steps' launches by op (the optimizer's share)
#   parity   point 4 on the float32 path with the TF32 projection kernels: shipped Bayer, seeds 0-5 (the seeds of
#            session 33's +0.017 dB)
PARTS=${PARTS:-tests full parity graphed}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 90 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -20 ;;
    full)
        timeout ${FULL_S:-300} python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 \
            > $OUT/full.txt 2>&1
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A9 "targets, this run" $OUT/full.txt | head -10
        grep -A6 "== train step 4x512" $OUT/full.txt ;;
    steps)
        timeout 150 python tools/bench_kernels.py --train-steps-only --step-archs shipped,shipped-bf16 --reps 10 \
            > $OUT/steps.txt 2>&1
        grep -E "checks:|FAIL" $OUT/steps.txt | head -6; grep -A6 "== train step 4x512" $OUT/steps.txt ;;
    graphed)
        timeout 90 python tools/step_breakdown.py --archs shipped shipped-bf16 --sensors bayer --graphed --top 6 \
            --callers 8 > $OUT/graphed_callers.txt 2>&1
        grep -E "^== |^-- |^ +[0-9.]+ ms x" $OUT/graphed_callers.txt | cut -c1-150 | head -40 ;;
    parity)
        timeout ${PARITY_S:-140} python tools/bench_kernels.py --parity-only --parity-archs shipped:bayer \
            --parity-seeds 6 --parity-first-seed 0 > $OUT/parity.txt 2>&1
        grep -E "^parity|check" $OUT/parity.txt | tail -3 ;;
    esac
done
true
