#!/bin/bash
# Session 44's last call (warm, ~360 s of device time left), on today's defaults (the specialized weight gradient
# with z rounded in the multipliers' registers, KPNT_WS_ROUND_A 1):
#   parity  point 4, graphed as kpnt-train trains: shipped, both sensors, 4 seeds
#   widths  WGRAD_WGMMA_WIDTHS (64,) / (64,128) over two rounds (X-Trans's 128 channels on the specialized form or
#           cuDNN's; Bayer the control)
PARTS=${PARTS:-parity widths}
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    parity)
        timeout 160 bash -c "bench '' $OUT/parity.txt --parity-only --parity-archs shipped --parity-seeds 4 \
            --parity-graphed"
        grep -E "^parity|check training parity" $OUT/parity.txt ;;
    widths)
        ab_rounds ws_widths WGRAD_WGMMA_WIDTHS "g.WGRAD_WGMMA_WIDTHS = VALUE" "(64,)" "(64,128)" shipped
        echo "X-Trans takes the specialized form at 128 channels: $(faster ws_widths "(64,)" "(64,128)" xtrans shipped)" ;;
    esac
done
echo "=== done $(date +%T)"
