#!/bin/bash
# Session 46's third call, on the tree without the bulk-copy producer (its PTX the same but for line numbers):
#   tests  every CUDA test (point 1 on the final tree)
#   ncu    today's warp-specialized weight gradient alone at the Bayer step's shape and at X-Trans's (session 44's
#          ncu predates the multipliers' register rounding): where its time goes now
# About 3 minutes.
PARTS=${PARTS:-tests ncu}
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ncu_profile.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        cuda_tests 240 ;;
    ncu)
        wgrad_alone_script /tmp/wgrad_b.py 4 64 258 258 True True
        profile_one "wgrad_wgmma_ws_kernel" "python /tmp/wgrad_b.py" 1 ncu_wgrad_ws_bayer
        wgrad_alone_script /tmp/wgrad_x.py 4 128 86 86 True True
        profile_one "wgrad_wgmma_ws_kernel" "python /tmp/wgrad_x.py" 1 ncu_wgrad_ws_xtrans
        for f in bayer xtrans; do
            echo "$f: $(grep -E "^\s+(SM Active Cycles|Executed Instructions) " $OUT/ncu_wgrad_ws_$f.txt | sort -u \
                | tr -s ' ' | tr '\n' ';')"
        done ;;
    esac
done
echo "=== done $(date +%T)"
