#!/bin/bash
# For the session after 43: the warp-specialized wgmma weight gradient (kernels/guide_wgrad.cu
# wgrad_wgmma_ws_kernel, guide_train.WGRAD_WGMMA_SPECIALIZED, off), written after session 43's device time ran out
# and never run: three warp groups multiply, a fourth copies, rounds and writes B through named barriers
# (setmaxnreg 144 / 80). About 5 minutes with the build.
#   tests      the kernel's tests, every form (its results must be the wgmma form's bits); later parts only if they pass
#   sanitize   synccheck (the named barriers), racecheck and memcheck over the specialized form, small shapes
#   convs      conv_algos.py at 4 x 64 x 258 x 258 and 4 x 128 x 86 x 86: the three forms beside cuDNN's
#   steps      point 2's rows, WGRAD_WGMMA_SPECIALIZED off / on over two rounds (Bayer; X-Trans the control)
#   ncu        the specialized form alone at the Bayer step's shape
#   breakdown  (not by default) the graphed float32 and bf16 steps' GPU time by kernel group on today's defaults
#              (last measured in session 38, before the weight-gradient kernels and the balanced front blocks)
# Switch it on only if Bayer is faster in both rounds; then at 128 channels, try WGRAD_WGMMA_WIDTHS = (64, 128).
PARTS=${PARTS:-tests sanitize convs steps ncu}
OK=1
SHAPES="[(2, 64, 37, 70), (3, 64, 5, 3), (1, 64, 16, 64), (2, 128, 23, 41), (1, 128, 8, 32)]"
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
source "$(dirname "$0")/ncu_profile.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    [ $OK = 1 ] || { echo "skipped: a test failed"; continue; }
    case $part in
    tests)
        tests_pass 150 tests/cuda/test_guide_wgrad.py || OK=0 ;;
    sanitize)
        for t in synccheck racecheck memcheck; do wgrad_sanitize $t 100 "$SHAPES" True; done ;;
    convs)
        timeout 150 bash -c "tool '' $OUT/convs.txt conv_algos.py --reps 30 --shapes 4x64x258x258 4x128x86x86"
        grep -E "wgrad.*(float32 \| nhwc \| off|kpnt)|rror" $OUT/convs.txt ;;
    steps)
        ab_rounds ws_steps WGRAD_WGMMA_SPECIALIZED "g.WGRAD_WGMMA_SPECIALIZED = VALUE" False True shipped
        echo "the warp-specialized form pays (Bayer): $(faster ws_steps False True bayer shipped)" ;;
    ncu)
        wgrad_alone_script /tmp/wgrad_ws.py 4 64 258 258 True True
        profile_one "wgrad_wgmma_ws_kernel" "python /tmp/wgrad_ws.py" 1 ncu_wgrad_ws
        grep -E "SM Active Cycles|Executed Instructions  " $OUT/ncu_wgrad_ws.txt | sort -u | head -4 ;;
    breakdown)
        timeout 150 bash -c "tool '' $OUT/breakdown.txt step_breakdown.py --archs shipped shipped-bf16 --graphed --top 10"
        grep -E "^==|ms|%" $OUT/breakdown.txt | head -40 ;;
    esac
done
echo "=== done $(date +%T)"
