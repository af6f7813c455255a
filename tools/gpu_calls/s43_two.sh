#!/bin/bash
# Session 43's second form of the wgmma weight gradient (one barrier a row, row y+1 prepared under row y's MMAs):
# its first run took 0.195 ms against mma.sync's 0.164 with 60 % more instructions (the parts' divisions); now the
# parts stride without divisions and B is written 16 bytes at a time.  KPNT_WGRAD_STEPS (1 or 2 steps of 8 positions
# a commit group; 2 by default) is this call's experiment.
#   tests   the kernel's tests (later parts only if they pass)
#   convs   conv_algos.py at 4 x 64 x 258 x 258 with 2 and 1 steps a group
#   steps   point 2's rows, WGRAD_WGMMA off / on over two rounds, with the faster step count of convs
#   ncu     the wgmma form alone with that step count
PARTS=${PARTS:-tests convs steps ncu}
OK=1
STEPS=2
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
source "$(dirname "$0")/ncu_profile.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    [ $OK = 1 ] || { echo "skipped: a test failed"; continue; }
    case $part in
    tests)
        tests_pass 120 tests/cuda/test_guide_wgrad.py || OK=0 ;;
    convs)
        for s in 2 1; do
            KPNT_WGRAD_STEPS=$s timeout 120 bash -c "tool '' $OUT/convs$s.txt conv_algos.py --reps 30 --shapes 4x64x258x258"
            echo "steps $s: $(grep -E "wgmma form" $OUT/convs$s.txt | awk -F'|' '{print $7}')"
            grep -E "wgrad.*(float32 \| nhwc \| off|kpnt)|rror" $OUT/convs$s.txt
        done
        STEPS=$(for s in 2 1; do echo "$(grep -E "wgmma form" $OUT/convs$s.txt | awk -F'|' '{print $7}') $s"; done \
                | sort -g | head -1 | awk '{print $2}')
        echo "faster: $STEPS steps a group" ;;
    steps)
        export KPNT_WGRAD_STEPS=$STEPS
        ab_rounds wgmma_steps WGRAD_WGMMA "g.WGRAD_WGMMA = VALUE" False True shipped
        echo "the wgmma form ($STEPS steps a group) pays (Bayer): $(faster wgmma_steps False True bayer shipped)" ;;
    ncu)
        wgrad_alone_script /tmp/wgrad_wgmma.py 4 64 258 258 True
        export KPNT_WGRAD_STEPS=$STEPS; profile_one "wgrad_wgmma_kernel" "python /tmp/wgrad_wgmma.py" 1 ncu_wgrad_wgmma
        grep -E "SM Active Cycles|Executed Instructions  " $OUT/ncu_wgrad_wgmma.txt | sort -u | head -4 ;;
    esac
done
echo "=== done $(date +%T)"
