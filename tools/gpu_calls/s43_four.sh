#!/bin/bash
# Session 43: the wgmma weight gradient at 128 channels (the X-Trans guide; four roles a run of lines, 64 output x 64
# input channels a block), compiled, not routed (guide_train.WGRAD_WGMMA_WIDTHS = (64,)).
#   tests     the kernel's tests, both forms and widths (later parts only if they pass)
#   memcheck  compute-sanitizer over the wgmma form at 128 channels, small shapes
#   convs     conv_algos.py at 4 x 128 x 86 x 86 (X-Trans's step) and 4 x 64 x 258 x 258
#   steps     point 2's rows, WGRAD_WGMMA_WIDTHS (64,) / (64, 128) over two rounds
PARTS=${PARTS:-tests memcheck convs steps}
OK=1
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    [ $OK = 1 ] || { echo "skipped: a test failed"; continue; }
    case $part in
    tests)
        tests_pass 120 tests/cuda/test_guide_wgrad.py || OK=0 ;;
    memcheck)
        wgrad_sanitize memcheck 100 "[(2, 128, 23, 41), (1, 128, 8, 32), (3, 128, 5, 3)]" ;;
    convs)
        timeout 120 bash -c "tool '' $OUT/convs.txt conv_algos.py --reps 30 --shapes 4x128x86x86 4x64x258x258"
        grep -E "wgrad.*(float32 \| nhwc \| off|kpnt)|rror" $OUT/convs.txt ;;
    steps)
        ab_rounds wgmma128_steps WGMMA_WIDTHS "g.WGRAD_WGMMA_WIDTHS = VALUE" "(64,)" "(64,128)" shipped
        echo "the wgmma form at 128 pays (X-Trans): $(faster wgmma128_steps "(64,)" "(64,128)" xtrans shipped)" ;;
    esac
done
echo "=== done $(date +%T)"
