#!/bin/bash
# Session 35's second call, on the defaults its first call (s35_one.sh) turned on: the TF32 twins at width 128
# (guide_train.TF32_WIDTHS) and the guide backward's sums reduced once (guide_train.DEFER_SUMS).
#   tests    every CUDA test
#   full     the full bench_kernels.py --no-compile --parity-steps 0 (points 1, 2, 3, 5 in one run; the README's table)
PARTS=${PARTS:-tests full}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        timeout 100 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -20 ;;
    full)
        timeout ${FULL_S:-300} python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 \
            > $OUT/full.txt 2>&1
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A9 "targets, this run" $OUT/full.txt | head -10
        grep -A6 "== train step 4x512" $OUT/full.txt ;;
    esac
done
echo "=== end $(date +%T)"
true
