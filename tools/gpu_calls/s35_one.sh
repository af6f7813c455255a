#!/bin/bash
# Session 35's first call: the questions of s35_first.sh (written in session 34; never ran: its four tries were refused;
# removed, `git show c9813a1:tools/gpu_calls/s35_first.sh`) merged with this session's change, in priority order, to
# fit one call (machines were scarce: every refused start costs device time).
#   tests     tests/cuda/test_guide_train.py: the TF32 twins at width 128 (written in session 34, never run), the
#             projection backward's partial_out and the deferred sums (guide_train.DEFER_SUMS, this session)
#   memcheck  the guide's passes at every compiled width (mlp_sanitize_run.py --guide routes the TF32 twins at 128;
#             DEFER_SUMS is on by default, so the network's backward writes into the shared buffer)
#   steps     point 2's rows, shipped and shipped-bf16, both sensors: A = session 34's routing (TF32 twins up to
#             width 64, a reduction a block) against B = TF32 twins up to 128 and the deferred sums, one process each
#   breakdown the graphed steps' launches under B (the 18 aten::sum of the guide backward should be 4)
#   autotune  B's float32 rows with cuDNN autotuning on (its TF32 3x3 weight gradients ran at ~100 TFLOP/s)
#   parity    the bf16 guide's Bayer parity, seeds 11-14, with what time is left
PARTS=${PARTS:-tests memcheck steps breakdown autotune parity}
source "$(dirname "$0")/preamble.sh"
A='g.TF32_WIDTHS = (32, 64); g.DEFER_SUMS = False'
B='g.TF32_WIDTHS = (32, 64, 128); g.DEFER_SUMS = True'
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        timeout 100 python -m pytest -q -p no:cacheprovider tests/cuda/test_guide_train.py > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^E  |passed|failed" $OUT/tests.txt | head -20 ;;
    memcheck)
        timeout 90 compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py --guide --no-mlp \
            > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|ok|done" $OUT/memcheck.txt | tail -6 ;;
    steps)
        for v in A B; do
            timeout 130 bash -c "bench '${!v}' $OUT/steps_$v.txt --train-steps-only --step-archs shipped,shipped-bf16 \
                --reps 10"
            echo "$v: ${!v}"; grep -E "checks:|FAIL" $OUT/steps_$v.txt | head -4
            grep -A5 "== train step 4x512" $OUT/steps_$v.txt | tail -4
        done ;;
    breakdown)
        timeout 90 python -c "
import runpy, sys
import kpnt.ops._cuda.guide_train as g
$B
sys.argv = ['step_breakdown.py'] + sys.argv[1:]
sys.path.insert(0, 'tools')
runpy.run_path('tools/step_breakdown.py', run_name='__main__')" --archs shipped shipped-bf16 --graphed --callers 12 \
            > $OUT/breakdown_B.txt 2>&1
        grep -E "^== |aten::sum|^\| (cuDNN|kpnt guide|other)" $OUT/breakdown_B.txt | head -24 ;;
    autotune)
        timeout 110 bash -c "bench '$B' $OUT/autotune_B.txt --train-steps-only --step-archs shipped --reps 10 \
            --cudnn-benchmark on"
        grep -E "checks:|FAIL" $OUT/autotune_B.txt | head -4; grep -A5 "== train step 4x512" $OUT/autotune_B.txt | tail -4 ;;
    parity)
        timeout ${PARITY_S:-100} python tools/bench_kernels.py --parity-only --parity-archs shipped-bf16:bayer \
            --parity-seeds 4 --parity-first-seed 11 > $OUT/parity_bf16.txt 2>&1
        grep -E "^parity|check|seed" $OUT/parity_bf16.txt | tail -8 ;;
    esac
done
echo "=== end $(date +%T)"
true
