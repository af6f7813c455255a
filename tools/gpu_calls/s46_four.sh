#!/bin/bash
# Session 46's last call: which call sites launch the graphed steps' "other" group (elementwise, reductions,
# copies: about 1 ms and 200+ launches of every shipped step, last listed in session 35), for the small-launch item
# of docs/KERNELS.md's "Left to do".  About 2 minutes.
source "$(dirname "$0")/preamble.sh"
timeout 300 python tools/step_breakdown.py --archs shipped shipped-bf16 --graphed --top 20 --callers 30 \
    > $OUT/callers_s46d_h100.txt 2>&1
echo "rc $?"
grep -E "^==|^\| other" $OUT/callers_s46d_h100.txt
