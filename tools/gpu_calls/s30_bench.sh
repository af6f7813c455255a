#!/bin/bash
# Session 30, call 8 (run as this one line on the machine call 7 left warm): point 3's rows and the MLP checks with
# call 7's kernels (kernel sources 0d5e4228bbf5).  About 1 minute.
source "$(dirname "$0")/preamble.sh"
timeout 120 python tools/bench_kernels.py --no-model --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
grep -E "time fused fwd|checks:|FAIL" $OUT/bench.txt | head -8
grep -A6 "issue 14's targets" $OUT/bench.txt
