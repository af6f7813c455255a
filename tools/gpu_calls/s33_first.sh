#!/bin/bash
# Session 33, call 1 (about 7 minutes): who launches the ~600 small kernels of the shipped training step, and
# more parity seeds for the bf16 guide (the owner's decision whether it becomes the training default).
#   callers  tools/step_breakdown.py --callers: the 'other' group's kernels by kpnt call site (eager step),
#            shipped-bf16 and shipped, both sensors
#   graphed  the same step as GraphedStep replays it (finite check, clipping, masked commit included)
#   parity   bench_kernels.py --parity-only --parity-archs shipped-bf16, seeds 4.. (session 32 ran 0-3)
PARTS=${PARTS:-callers graphed parity}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    callers)
        timeout 150 python tools/step_breakdown.py --archs shipped-bf16 shipped --top 12 --callers 45 \
            > $OUT/callers.txt 2>&1
        grep -E "^== |^-- |^\| other" $OUT/callers.txt | head -20 ;;
    graphed)
        timeout 90 python tools/step_breakdown.py --archs shipped-bf16 --graphed --top 40 > $OUT/graphed.txt 2>&1
        grep -E "^== |^\| " $OUT/graphed.txt | head -24 ;;
    parity)
        timeout ${PARITY_S:-230} python tools/bench_kernels.py --parity-only --parity-archs shipped-bf16 \
            --parity-seeds 8 --parity-first-seed 4 > $OUT/parity_bf16.txt 2>&1
        grep -E "parity|check" $OUT/parity_bf16.txt | grep -v "^cuDNN" | tail -24 ;;
    esac
done
true
