#!/bin/bash
# For session 32's first call (written in session 31 after its device time ran out; about 8 minutes).
#   alerts   tools/mlp_identity.py alerts: which ops make the X-Trans training steps differ from run to run
#            (session 31 call 3: up to 8.4e-9 on one build; the Bayer steps are bitwise reproducible)
#   parity   point 4 on the written-out guide (session 31 ran 2 seeds a sensor): 6 seeds of the shipped
#            architecture, then 6 of it with the bf16 guide (whether --guide-dtype bfloat16 could be the default)
#   steps    tools/step_breakdown.py --top 30 for shipped and shipped-bf16: what the ~2.3-2.6 ms of small kernels
#            (~600 launches) left in the step are
# PARTS (default "alerts steps parity") to run fewer; parity last, as it is the longest.
PARTS=${PARTS:-alerts steps parity}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    alerts)
        timeout 120 python tools/mlp_identity.py alerts > $OUT/alerts.txt 2>&1; tail -12 $OUT/alerts.txt ;;
    steps)
        timeout 120 python tools/step_breakdown.py --archs shipped shipped-bf16 --top 30 > $OUT/steps.txt 2>&1
        grep -E "^== |^\| [a-zA-Z]" $OUT/steps.txt | head -50 ;;
    parity)
        timeout 200 python tools/bench_kernels.py --parity-only --parity-archs shipped --parity-seeds 6 \
            --parity-first-seed 2 > $OUT/parity.txt 2>&1
        grep -E "^parity|check training" $OUT/parity.txt
        timeout 200 python tools/bench_kernels.py --parity-only --parity-archs shipped-bf16 --parity-seeds 6 \
            > $OUT/parity_bf16.txt 2>&1
        grep -E "^parity|check training" $OUT/parity_bf16.txt ;;
    esac
done
