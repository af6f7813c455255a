#!/bin/bash
# (Ran in session 46: the bulk form was slower in both sensors and both rounds, and its switch and code were then
# removed from kernels/guide_wgrad.cu; git show 7839099:kernels/guide_wgrad.cu has them.)
# For the session after 44: the warp-specialized weight gradient's copies on the bulk copy engine
# (kernels/guide_wgrad.cu KPNT_WS_BULK, written after session 44's device time ran out, never run; off), built as a
# second copy of the sources in /tmp/kernels_bulk, and X-Trans's parity with its weight gradient on the kernel
# (routed in session 44 after its parity run).  About 7 minutes with the two builds.
#   tests      the weight gradient's tests on the bulk build (its results must be the wgmma form's bits); the bulk
#              parts after it only if they pass
#   sanitize   synccheck and memcheck over the bulk build's specialized form, small shapes (racecheck flags its
#              bar.arrive handoff whatever it does: session 44's probe)
#   convs      conv_algos.py on the bulk build at 4 x 64 x 258 x 258 and 4 x 128 x 86 x 86 (the three forms, cuDNN)
#   steps      point 2's rows, today's build / the bulk build over two rounds (both sensors take the specialized
#              form since session 44): switch it on (#define KPNT_WS_BULK 1) only if both sensors are faster in
#              both rounds
#   ncu        the bulk build's specialized form alone at the Bayer step's shape
#   parity     point 4 on today's defaults, graphed: shipped, both sensors, 4 seeds
#   breakdown  the graphed float32 and bf16 steps' GPU time by kernel group on today's defaults (last measured in
#              session 39, before the wgmma weight gradients and the balanced front blocks): where point 2 stands
PARTS=${PARTS:-tests sanitize convs steps ncu parity breakdown}
SHAPES="[(2, 64, 37, 70), (3, 64, 5, 3), (1, 64, 16, 64), (2, 128, 23, 41), (1, 128, 8, 32)]"
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
source "$(dirname "$0")/ncu_profile.sh"
BULK=/tmp/kernels_bulk
rm -rf $BULK && cp -r kernels $BULK && sed -i 's/^#define KPNT_WS_BULK 0$/#define KPNT_WS_BULK 1/' $BULK/guide_wgrad.cu
grep -n "^#define KPNT_WS_BULK" $BULK/guide_wgrad.cu
OK=1
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        (export KPNT_KERNELS_DIR=$BULK; tests_pass 120 tests/cuda/test_guide_wgrad.py) || OK=0 ;;  # a hang ends here
    sanitize)
        [ $OK = 1 ] || { echo "skipped: a test failed"; continue; }
        for t in synccheck memcheck; do (export KPNT_KERNELS_DIR=$BULK; wgrad_sanitize $t 100 "$SHAPES" True); done ;;
    convs)
        [ $OK = 1 ] || { echo "skipped: a test failed"; continue; }
        timeout 100 env KPNT_KERNELS_DIR=$BULK bash -c "tool '' $OUT/bulk_convs.txt conv_algos.py --reps 30 \
            --shapes 4x64x258x258 4x128x86x86"
        grep -E "wgrad.*(float32 \| nhwc \| off|kpnt)|rror" $OUT/bulk_convs.txt ;;
    steps)
        [ $OK = 1 ] || { echo "skipped: a test failed"; continue; }
        ab_env_rounds bulk_steps KPNT_KERNELS_DIR $PWD/kernels $BULK shipped
        echo "bulk copies pay: Bayer $(faster bulk_steps $PWD/kernels $BULK bayer shipped)," \
            "X-Trans $(faster bulk_steps $PWD/kernels $BULK xtrans shipped)" ;;
    ncu)
        [ $OK = 1 ] || { echo "skipped: a test failed"; continue; }
        wgrad_alone_script /tmp/wgrad_bulk.py 4 64 258 258 True True
        (export KPNT_KERNELS_DIR=$BULK; profile_one "wgrad_wgmma_ws_kernel" "python /tmp/wgrad_bulk.py" 1 ncu_wgrad_bulk)
        grep -E "SM Active Cycles|Executed Instructions  |stalled_barrier" $OUT/ncu_wgrad_bulk.txt | sort -u | head -5 ;;
    parity)
        timeout 160 bash -c "bench '' $OUT/parity.txt --parity-only --parity-archs shipped --parity-seeds 4 \
            --parity-graphed"
        grep -E "^parity|check training parity" $OUT/parity.txt ;;
    breakdown)
        timeout 150 bash -c "tool '' $OUT/breakdown.txt step_breakdown.py --archs shipped shipped-bf16 --graphed --top 10"
        grep -E "^==|ms|%" $OUT/breakdown.txt | head -60 ;;
    esac
done
echo "=== done $(date +%T)"
