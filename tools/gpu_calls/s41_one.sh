#!/bin/bash
# Session 41's calls: session 40's questions (s40_one.sh, which no machine ran in session 40 or 41) after a new
# first part, taps. Order: PARTS="taps parity ops" (about 7 minutes), then PARTS="front_ncu wgrad_ncu rows" (about
# 6). The parts other than taps run s40_one.sh, whose front_ncu part has a fourth profile since session 41: X-Trans
# with the searched tap order.
#   taps       front_level.TAP_ORDER (new, off): its CUDA tests (tests/cuda/test_front_level.py, the ROWS_BY_SITE
#              and tap-order tests included), then point 2's rows with the canonical and the searched tap order
#              over two rounds ($OUT/taps.txt). The searched order reads 21-22 % fewer 32-byte sectors a tap load
#              (tools/front_sectors.py, a CPU model); this measures whether that moves the step
PARTS=${PARTS:-taps parity ops}
here=$(dirname "$0")
source "$here/preamble.sh"
source "$here/ab_rounds.sh"
for part in $PARTS; do
    case $part in
    taps)
        echo "=== $part $(date +%T)"
        timeout 120 python -m pytest -q -p no:cacheprovider tests/cuda/test_front_level.py > $OUT/taps_test.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/taps_test.txt | head -6
        grep -qE "failed|^ERROR" $OUT/taps_test.txt && { echo "taps: a front test failed, no timing"; continue; }
        ab_rounds taps TAP_ORDER "import kpnt.ops._cuda.front_level as f; f.TAP_ORDER = VALUE" \
            None f.SEARCHED_TAP_ORDER shipped,shipped-bf16
        echo "tap order (X-Trans, both guides, both rounds): \
$(faster taps None f.SEARCHED_TAP_ORDER xtrans "shipped shipped-bf16")"
        echo "tap order (Bayer): $(faster taps None f.SEARCHED_TAP_ORDER bayer "shipped shipped-bf16")" ;;
    *)
        PARTS=$part bash "$here/s40_one.sh" ;;
    esac
done
echo "=== done $(date +%T)"
