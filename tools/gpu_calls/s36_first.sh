#!/bin/bash
# For session 36's first call (written in session 35 after its last call; device time ran out). About 7 minutes.
#   tests     every CUDA test: the fix of session 35's 29 failures (fd06716: the guide start's block means back on
#             avg_pool2d's arithmetic, with a written-out backward; its CUDA test), and the projection forward's
#             prologue (guide_train.FUSED_PROJ_PROLOGUE, written after the last call: its kernels against
#             bias_relu + the plain kernel bit for bit, the network with it against without)
#   memcheck  the guide's passes, the prologue among them (mlp_sanitize_run.py --guide)
#   steps     point 2's rows with the prologue off (today's default) and on, one process each
#   parity    point 4 on the float32 X-Trans path as it runs since session 35 (TF32 twins at width 128): 4 seeds
PARTS=${PARTS:-tests memcheck steps parity}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        timeout 120 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -20 ;;
    memcheck)
        timeout 100 compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py --guide --no-mlp \
            > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|ok|done" $OUT/memcheck.txt | tail -6 ;;
    steps)
        for on in False True; do
            timeout 130 bash -c "bench 'g.FUSED_PROJ_PROLOGUE = $on' $OUT/steps_prologue_$on.txt --train-steps-only \
                --step-archs shipped,shipped-bf16 --reps 10"
            echo "FUSED_PROJ_PROLOGUE=$on"; grep -E "checks:|FAIL" $OUT/steps_prologue_$on.txt | head -4
            grep -A5 "== train step 4x512" $OUT/steps_prologue_$on.txt | tail -4
        done ;;
    parity)
        timeout ${PARITY_S:-150} python tools/bench_kernels.py --parity-only --parity-archs shipped:xtrans \
            --parity-seeds 4 > $OUT/parity_xtrans.txt 2>&1
        grep -E "^parity|check" $OUT/parity_xtrans.txt | tail -3 ;;
    esac
done
echo "=== end $(date +%T)"
true
