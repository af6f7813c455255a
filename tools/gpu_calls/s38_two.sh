#!/bin/bash
# Session 38's second call (not run in session 38: the device time ran out in refused starts): kpnt's TF32 weight
# gradient of the float32 guide's 3x3s (kernels/guide_wgrad.cu,
# guide_train.FUSED_WGRAD) and the update kernels (call 1: their tests passed under memcheck; the graphed X-Trans
# steps 0.47 ms faster, H100).
#   tests     every CUDA test (the whole suite: FUSED_WGRAD and FUSED_UPDATE on by default); the later parts run only
#             if none failed
#   convs     tools/conv_algos.py with kpnt's kernel beside cuDNN's passes
#   steps     point 2's rows with FUSED_WGRAD off and on, alternated over two rounds (one file, $OUT/steps.txt)
#   spread    point 2's rows (shipped, shipped-bf16) with front_level.UNEVEN_CLASSES_SPREAD 1 and 4, alternated over
#             two rounds ($OUT/spread.txt): the X-Trans front backward's classes (4:1:4) over more blocks
#   memcheck  compute-sanitizer over the weight-gradient kernel's tests
#   parity    point 4 on the float32 guide with the kernel: shipped, both sensors, 4 seeds each
#   full      the full bench_kernels.py --no-compile --parity-steps 0 --reps 20 with the switches that paid
#   profile   where the graphed X-Trans step's small kernels come from (step_breakdown.py --callers), same switches
# All parts take about 12 minutes, more than a call may: split them over two calls (the first decides the switches),
#   PARTS="tests convs steps spread memcheck" bash tools/gpu_calls/s38_two.sh      (about 7 minutes)
#   WGRAD=... SPREAD=... PARTS="parity full profile" bash tools/gpu_calls/s38_two.sh (about 5 minutes)
PARTS=${PARTS:-tests convs steps spread memcheck parity full profile}
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
# The switches the parity, full and profile parts run with: decided by the steps and spread parts when they run,
# else given (a second call: WGRAD=True SPREAD=4 PARTS="parity full profile" bash tools/gpu_calls/s38_two.sh).
WGRAD=${WGRAD:-True}
SPREAD=${SPREAD:-1}
switches() { echo "g.FUSED_WGRAD = $WGRAD; import kpnt.ops._cuda.front_level as f; f.UNEVEN_CLASSES_SPREAD = $SPREAD"; }
OK=1
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    [ $OK = 1 ] || { echo "skipped: a CUDA test failed"; continue; }
    case $part in
    tests)
        cuda_tests 150
        grep -qE " passed" $OUT/tests.txt && ! grep -qE "failed|^ERROR" $OUT/tests.txt || OK=0 ;;
    convs)
        timeout 120 bash -c "tool '' $OUT/convs.txt conv_algos.py --reps 20"   # session 39: plain `python tools/...` found no kpnt there
        grep -E "^#|wgrad|Error|error" $OUT/convs.txt | grep -v bfloat16 | head -20 ;;
    steps)
        ab_rounds steps FUSED_WGRAD "g.FUSED_WGRAD = VALUE" False True shipped
        WGRAD=$(faster steps False True "bayer xtrans" shipped)
        echo "the weight-gradient kernel pays: $WGRAD (the parity, full and profile parts run with FUSED_WGRAD = $WGRAD)" ;;
    spread)
        ab_rounds spread SPREAD "import kpnt.ops._cuda.front_level as f; f.UNEVEN_CLASSES_SPREAD = VALUE" 1 4 \
            shipped,shipped-bf16
        SPREAD=$(faster spread 1 4 xtrans "shipped shipped-bf16")
        echo "spread chosen for the parity, full and profile parts: $SPREAD" ;;
    memcheck)
        timeout 90 compute-sanitizer --tool memcheck python -m pytest -q -p no:cacheprovider \
            tests/cuda/test_guide_wgrad.py -k "matches_float64 and not 4x128x86x86 or bad_input" > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|passed|failed" $OUT/memcheck.txt | tail -3 ;;
    parity)
        timeout 150 bash -c "bench '$(switches)' $OUT/parity.txt --parity-only --parity-archs shipped --parity-seeds ${SEEDS:-4}"
        grep -E "^parity|check training parity" $OUT/parity.txt ;;
    full)
        timeout ${FULL_S:-240} bash -c "bench '$(switches)' $OUT/full.txt --no-compile --parity-steps 0 --reps 20"
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A9 "targets, this run" $OUT/full.txt | head -10
        grep -A6 "== train step 4x512" $OUT/full.txt ;;
    profile)
        timeout 120 bash -c "tool '$(switches)' $OUT/breakdown.txt step_breakdown.py --archs shipped shipped-bf16 \
            --sensors xtrans --graphed --top 14 --callers 30"
        grep -v Warning $OUT/breakdown.txt | grep -vE "^\s*$" | head -60 ;;
    esac
done
echo "=== done $(date +%T)"
true
