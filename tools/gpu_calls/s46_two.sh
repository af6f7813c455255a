#!/bin/bash
# Session 46's second call.  Its first (s45_one.sh) left the bulk-copy producer off (slower in both sensors, both
# rounds) and measured X-Trans's graphed parity with its weight gradient on the kernel over seeds 0-3: mean -0.044 dB,
# standard error 0.049, one seed at -0.191, close to point 4's 0.05 bound.  So:
#   parity    X-Trans shipped, graphed, ten more seeds (4-13), to settle its mean
#   identity  one fused training step of the shipped and wide models (both sensors, cuDNN deterministic) saved twice
#             by today's build and compared: do the X-Trans steps still differ from run to run (session 31: by up
#             to 8.4e-9) now that its weight gradients run on kpnt's kernel?
# About 4 minutes.
PARTS=${PARTS:-parity identity}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    parity)
        timeout 330 bash -c "bench '' $OUT/parity_xtrans.txt --parity-only --parity-archs shipped:xtrans \
            --parity-seeds 10 --parity-first-seed 4 --parity-graphed"
        grep -E "^parity|check training parity" $OUT/parity_xtrans.txt ;;
    identity)
        for i in 1 2; do timeout 90 python tools/mlp_identity.py save /tmp/id$i.pt --models > /dev/null 2>&1 \
            || echo "save $i failed"; done
        python tools/mlp_identity.py compare /tmp/id1.pt /tmp/id2.pt 2>&1 | tee $OUT/identity.txt ;;
    esac
done
echo "=== done $(date +%T)"
