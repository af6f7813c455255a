#!/bin/bash
# Session 44's second call, with guide_train.WGRAD_WGMMA_SPECIALIZED on (s44_one.sh: same bits, Bayer faster in both
# rounds; racecheck reported races on its bar.arrive handoff):
#   probe     racecheck_arrive_probe.cu under racecheck, three forms: does racecheck model bar.arrive? (form 0 is the
#             kernel's handoff, form 1 the same with bar.sync only, form 2 a real race)
#   rounda    the specialized form with z rounded in the multipliers' registers (KPNT_WS_ROUND_A 1, a second build
#             of the sources in /tmp/kernels_ra): its tests (the same bits), the convolutions beside the others, and
#             point 2's rows against today's build over two rounds
#   widths    (not by default) WGRAD_WGMMA_WIDTHS (64,) / (64,128) over two rounds (X-Trans's 128 channels on the
#             specialized form or cuDNN's; Bayer the control)
#   validate  s44_three.sh (every CUDA test, memcheck, graphed parity, the full bench; VALIDATE_PARTS picks) on the
#             sources rounda chose
# About 8 minutes with the two builds (device starts were scarce: one call instead of two).
PARTS=${PARTS:-probe rounda validate}
KERNELS=$PWD/kernels
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
RA=/tmp/kernels_ra
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    probe)
        $(command -v nvcc || echo /usr/local/cuda/bin/nvcc) -arch=sm_90 -o /tmp/probe tools/gpu_calls/racecheck_arrive_probe.cu
        for f in 0 1 2; do
            timeout 60 compute-sanitizer --tool racecheck /tmp/probe $f > $OUT/probe$f.txt 2>&1
            echo "form $f rc $?: $(grep -E "^form|RACECHECK SUMMARY" $OUT/probe$f.txt | tr '\n' ' ')"
        done
        cat $OUT/probe*.txt > $OUT/racecheck_probe.txt && rm $OUT/probe*.txt ;;
    rounda)
        rm -rf $RA && cp -r kernels $RA && sed -i 's/^#define KPNT_WS_ROUND_A 0$/#define KPNT_WS_ROUND_A 1/' $RA/guide_wgrad.cu
        grep -n "^#define KPNT_WS_ROUND_A" $RA/guide_wgrad.cu
        (export KPNT_KERNELS_DIR=$RA; tests_pass 200 tests/cuda/test_guide_wgrad.py); ok=$?
        mv $OUT/tests.txt $OUT/rounda_tests.txt
        [ $ok = 0 ] || { echo "the rest of rounda skipped: a test failed"; continue; }
        timeout 100 env KPNT_KERNELS_DIR=$RA bash -c "tool '' $OUT/rounda_convs.txt conv_algos.py --reps 30 \
            --shapes 4x64x258x258 4x128x86x86"
        grep -E "wgrad.*(float32 \| nhwc \| off|kpnt)|rror" $OUT/rounda_convs.txt
        ab_env_rounds rounda_steps KPNT_KERNELS_DIR $PWD/kernels $RA shipped
        KERNELS=$(faster rounda_steps $PWD/kernels $RA bayer shipped)
        echo "rounding in registers pays (Bayer): $([ $KERNELS = $RA ] && echo True || echo False)" ;;
    widths)
        ab_rounds ws_widths WGRAD_WGMMA_WIDTHS "g.WGRAD_WGMMA_WIDTHS = VALUE" "(64,)" "(64,128)" shipped
        echo "X-Trans takes the specialized form at 128 channels: $(faster ws_widths "(64,)" "(64,128)" xtrans shipped)" ;;
    validate)
        echo "sources: $KERNELS"
        (export KPNT_KERNELS_DIR=$KERNELS PARTS="${VALIDATE_PARTS:-tests memcheck parity full}"
         bash "$(dirname "$0")/s44_three.sh") ;;
    esac
done
echo "=== done $(date +%T)"
