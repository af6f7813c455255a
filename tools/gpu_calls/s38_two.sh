#!/bin/bash
# Session 38's second call: kpnt's TF32 weight gradient of the float32 guide's 3x3s (kernels/guide_wgrad.cu,
# guide_train.FUSED_WGRAD) and the update kernels (call 1: their tests passed under memcheck; the graphed X-Trans
# steps 0.47 ms faster, H100).
#   tests     every CUDA test (the whole suite: FUSED_WGRAD and FUSED_UPDATE on by default); the later parts run only
#             if none failed
#   convs     tools/conv_algos.py with kpnt's kernel beside cuDNN's passes
#   steps     point 2's rows with FUSED_WGRAD off and on, alternated over two rounds (one file, $OUT/steps.txt)
#   memcheck  compute-sanitizer over the weight-gradient kernel's tests
#   parity    point 4 on the float32 guide with the kernel: shipped, both sensors, 4 seeds each
#   full      the full bench_kernels.py --no-compile --parity-steps 0 --reps 20 with everything on by default
PARTS=${PARTS:-tests convs steps memcheck parity full}
source "$(dirname "$0")/preamble.sh"
# True when the graphed shipped steps (both sensors) were faster with FUSED_WGRAD on in both rounds of $OUT/steps.txt.
wgrad_pays() {
    awk '/^--- round/ {split($4, kv, "="); on = kv[2]; r = $3; sub(",", "", r)}
         $2 == "shipped" && ($1 == "bayer" || $1 == "xtrans") && !((r, on, $1) in t) {t[r, on, $1] = $6; n++}
         END {ok = (n == 8)
              for (r = 1; r <= 2; r++) {
                  if (t[r, "True", "bayer"] >= t[r, "False", "bayer"]) ok = 0
                  if (t[r, "True", "xtrans"] >= t[r, "False", "xtrans"]) ok = 0 }
              print ok ? "True" : "False"}' $OUT/steps.txt
}
WGRAD=True
OK=1
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    [ $OK = 1 ] || { echo "skipped: a CUDA test failed"; continue; }
    case $part in
    tests)
        cuda_tests 150
        grep -qE " passed" $OUT/tests.txt && ! grep -qE "failed|^ERROR" $OUT/tests.txt || OK=0 ;;
    convs)
        timeout 120 python tools/conv_algos.py --reps 20 > $OUT/convs.txt 2>&1
        grep -E "^#|wgrad|Error|error" $OUT/convs.txt | grep -v bfloat16 | head -20 ;;
    steps)
        for round in 1 2; do
            for on in False True; do
                echo "--- round $round, FUSED_WGRAD=$on" >> $OUT/steps.txt
                timeout 100 bash -c "bench 'g.FUSED_WGRAD = $on' $OUT/step.txt --train-steps-only --step-archs shipped \
                    --reps 10"
                cat $OUT/step.txt >> $OUT/steps.txt
                echo "round $round, FUSED_WGRAD=$on: $(grep -E "checks:" $OUT/step.txt)"
                grep -E "FAIL" $OUT/step.txt | head -3
                grep -A3 "== train step 4x512" $OUT/step.txt | tail -2
            done
        done
        rm -f $OUT/step.txt
        WGRAD=$(wgrad_pays)
        echo "the weight-gradient kernel pays: $WGRAD (the parity and full parts run with FUSED_WGRAD = $WGRAD)" ;;
    memcheck)
        timeout 90 compute-sanitizer --tool memcheck python -m pytest -q -p no:cacheprovider \
            tests/cuda/test_guide_wgrad.py -k "matches_float64 and not 4x128x86x86 or bad_input" > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|passed|failed" $OUT/memcheck.txt | tail -3 ;;
    parity)
        timeout 120 bash -c "bench 'g.FUSED_WGRAD = $WGRAD' $OUT/parity.txt --parity-only --parity-archs shipped --parity-seeds ${SEEDS:-4}"
        grep -E "^parity|check training parity" $OUT/parity.txt ;;
    full)
        timeout ${FULL_S:-240} bash -c "bench 'g.FUSED_WGRAD = $WGRAD' $OUT/full.txt --no-compile --parity-steps 0 --reps 20"
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A9 "targets, this run" $OUT/full.txt | head -10
        grep -A6 "== train step 4x512" $OUT/full.txt ;;
    esac
done
echo "=== done $(date +%T)"
true
