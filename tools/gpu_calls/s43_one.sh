#!/bin/bash
# Session 43's call on the weight-gradient kernel's Hopper form (kernels/guide_wgrad.cu wgrad_wgmma_kernel,
# guide_train.WGRAD_WGMMA, off): warp-group MMA m64n64k8 TF32, A (z at the taps) from registers, B (gh^T) from shared
# memory, three warp groups a block (one a row of taps).
#   tests     the kernel's tests, both forms (later parts run only if they pass)
#   memcheck  compute-sanitizer memcheck over the wgmma form at shapes with partial strips and tiny grids
#   convs     tools/conv_algos.py at the Bayer step's 4 x 64 x 258 x 258: both forms beside cuDNN's passes
#   steps     point 2's rows with WGRAD_WGMMA off / on over two rounds ($OUT/wgmma_steps.txt); X-Trans's 128
#             channels stay on cuDNN: a control
#   ncu       the wgmma form alone at 4 x 64 x 258 x 258 under Nsight Compute
PARTS=${PARTS:-tests memcheck convs steps}
OK=1
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
source "$(dirname "$0")/ncu_profile.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    [ $OK = 1 ] || { echo "skipped: a test failed"; continue; }
    case $part in
    tests)
        tests_pass 120 tests/cuda/test_guide_wgrad.py || OK=0 ;;
    memcheck)
        wgrad_sanitize memcheck 150 "[(2, 64, 37, 70), (3, 64, 5, 3), (1, 64, 16, 64), (4, 64, 258, 258)]" ;;
    convs)
        timeout 120 bash -c "tool '' $OUT/convs.txt conv_algos.py --reps 20 --shapes 4x64x258x258"
        grep -E "wgrad.*(float32 \| nhwc \| off|kpnt)|rror" $OUT/convs.txt ;;
    steps)
        ab_rounds wgmma_steps WGRAD_WGMMA "g.WGRAD_WGMMA = VALUE" False True shipped
        echo "the wgmma form pays (Bayer): $(faster wgmma_steps False True bayer shipped)" ;;
    ncu)
        wgrad_alone_script /tmp/wgrad_wgmma.py 4 64 258 258 True
        profile_one "wgrad_wgmma_kernel" "python /tmp/wgrad_wgmma.py" 1 ncu_wgrad_wgmma
        grep -E "SM Active Cycles|Grid Size|Executed Instructions  |Registers Per|Block Size" $OUT/ncu_wgrad_wgmma.txt | sort -u | head -8 ;;
    esac
done
echo "=== done $(date +%T)"
