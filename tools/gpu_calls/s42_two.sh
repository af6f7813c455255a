#!/bin/bash
# Session 42's last call, on today's defaults (guide_train.FUSED_WGRAD on for 64 channels since s42_one.sh):
#   tests     every CUDA test; the later parts run only if none failed
#   memcheck  compute-sanitizer over the weight-gradient kernel's tests (the 258 x 258 grid left out: slow there)
#   parity    point 4, graphed as kpnt-train trains: shipped, both sensors, 4 seeds (the Bayer one now takes the
#             kernel's weight gradients)
#   full      the full bench_kernels.py --no-compile --parity-steps 0 --reps 20: the README's table
# About 8.5 minutes.
PARTS=${PARTS:-tests memcheck parity full}
source "$(dirname "$0")/preamble.sh"
OK=1
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    [ $OK = 1 ] || { echo "skipped: a CUDA test failed"; continue; }
    case $part in
    tests)
        cuda_tests_pass 150 || OK=0 ;;
    memcheck)
        timeout ${MEMCHECK_S:-90} compute-sanitizer --tool memcheck python -m pytest -q -p no:cacheprovider \
            tests/cuda/test_guide_wgrad.py -k "matches_float64 and not 4x128x86x86 and not 4x64x258x258 or bad_input" \
            > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|passed|failed" $OUT/memcheck.txt | tail -3 ;;
    parity)
        timeout 160 bash -c "bench '' $OUT/parity.txt --parity-only --parity-archs shipped --parity-seeds 4 \
            --parity-graphed"
        grep -E "^parity|check training parity" $OUT/parity.txt ;;
    full)
        timeout ${FULL_S:-240} bash -c "bench '' $OUT/full.txt --no-compile --parity-steps 0 --reps 20"
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A7 "== train step 4x512" $OUT/full.txt | head -8 ;;
    esac
done
echo "=== done $(date +%T)"
