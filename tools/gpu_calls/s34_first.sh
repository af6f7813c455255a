#!/bin/bash
# For session 34's first call (written in session 33, whose device time ran out; about 9 minutes).
#   tests   tests/cuda/test_guide_train.py: the float32 projection kernels (TF32 twins, written in session 33 after
#           its last call, never run) against float64, their bad input and routing
#   memcheck the guide's passes with the TF32 twins (tools/mlp_sanitize_run.py --guide --no-mlp)
#   tf32    the shipped float32 step with kpnt.ops._cuda.guide_train.FUSED_PROJ_TF32 on (point 2's float32 row;
#           estimate 17.0 -> ~14.4 ms Bayer), and the guide probe (its "TF32 projection kernels" row)
#   full    the full bench_kernels.py --no-compile --parity-steps 0 on session 33's kernels (its 151 checks last
#           ran in session 31; sessions 32-33 timed only the step rows)
#   parity  bf16 Bayer parity with the fused projection forward on and off, same seeds (session 33: -0.063 dB over
#           5 seeds on its kernels against -0.011 over 9 on session 32's; which change, or noise?)
#   graphed the graphed step's extra launches by op (step_breakdown.py --graphed --callers)
PARTS=${PARTS:-tests memcheck tf32 graphed full parity}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 60 python -m pytest -q -p no:cacheprovider tests/cuda/test_guide_train.py > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^E  |passed|failed" $OUT/tests.txt | head -20 ;;
    memcheck)
        timeout 60 compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py --guide --no-mlp \
            > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|ok|done" $OUT/memcheck.txt | tail -6 ;;
    tf32)
        timeout 120 bash -c "bench 'g.FUSED_PROJ_TF32 = True' $OUT/tf32_steps.txt \
            --train-steps-only --step-archs shipped --reps 10"
        grep -E "checks:|FAIL" $OUT/tf32_steps.txt | head -4; grep -A4 "== train step 4x512" $OUT/tf32_steps.txt
        timeout 60 python tools/guide_train_probe.py --reps 5 > $OUT/probe.txt 2>&1; tail -18 $OUT/probe.txt ;;
    graphed)
        timeout 90 python tools/step_breakdown.py --archs shipped-bf16 --sensors bayer --graphed --top 12 \
            --callers 30 > $OUT/graphed_callers.txt 2>&1
        grep -E "^== |^-- |^ +[0-9.]+ ms x" $OUT/graphed_callers.txt | cut -c1-150 | head -45 ;;
    full)
        timeout ${FULL_S:-300} python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 \
            > $OUT/full.txt 2>&1
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A14 "targets, this run" $OUT/full.txt | head -16 ;;
    parity)
        for on in True False; do
            timeout ${PARITY_S:-130} bash -c "bench 'g.FUSED_PROJ_FORWARD = $on' \
                $OUT/parity_projfwd_$on.txt --parity-only --parity-archs shipped-bf16:bayer --parity-seeds 6 \
                --parity-first-seed 11"
            grep -E "^parity|check" $OUT/parity_projfwd_$on.txt | tail -3
        done ;;
    esac
done
true
