#!/bin/bash
# Session 32, call 2 as it could still run (about 3 minutes of device time were left after five refused starts):
# the fused projection backward's tests, the guide probe with and without it, point 2's bf16 row.
source "$(dirname "$0")/preamble.sh"
echo "=== tests"
timeout 60 python -m pytest -q -p no:cacheprovider tests/cuda/test_guide_train.py > $OUT/tests.txt 2>&1
grep -E "^FAILED|^E  |passed|failed" $OUT/tests.txt | head -20
echo "=== probe"
timeout 50 python tools/guide_train_probe.py --reps 5 > $OUT/probe.txt 2>&1; tail -9 $OUT/probe.txt
echo "=== bench"
timeout 60 python tools/bench_kernels.py --train-steps-only --step-archs shipped-bf16 --reps 5 > $OUT/bench.txt 2>&1
grep -E "checks:|FAIL|graphed|reference " $OUT/bench.txt | head -10
true
