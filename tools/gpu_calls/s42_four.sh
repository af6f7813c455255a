#!/bin/bash
# Written in session 42 after its device time ran out, for the next session's first call (about 5 minutes with the
# build):
# front_level.BALANCED_CLASSES (new, off), the X-Trans front backward's blocks as one wave the site classes share
# by their rows (kernels/mlp_bwd_wgmma.cuh block_of_group).
#   tests     every CUDA test (the balanced blocks' test among them; the MLP backward kernel every caller runs
#             was rebuilt with the shared form beside it, its default form's PTX unchanged but for an unused
#             parameter); the later parts run only if none failed
#   balanced  point 2's rows with it off / on over two rounds ($OUT/balanced.txt). Bayer's equal classes never
#             take it: a control
#   ncu       the X-Trans front backward with it on under Nsight Compute: are the SMs evenly busy now (session
#             42: min 62 % below and max 24 % above the mean active cycles with equal blocks a class)
#   wgrad128  the TF32 weight-gradient kernel alone at the X-Trans guide's 4 x 128 x 86 x 86 under Nsight Compute:
#             why it takes 0.099 ms against cuDNN's 0.074 there (it stays routed to cuDNN) while the 64-channel
#             shape beats cuDNN (session 42)
PARTS=${PARTS:-tests balanced ncu wgrad128}
OK=1
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
source "$(dirname "$0")/ncu_profile.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    [ $OK = 1 ] || { echo "skipped: a CUDA test failed"; continue; }
    case $part in
    tests)
        cuda_tests_pass 150 || OK=0 ;;
    balanced)
        ab_rounds balanced BALANCED_CLASSES "import kpnt.ops._cuda.front_level as f; f.BALANCED_CLASSES = VALUE" \
            False True shipped,shipped-bf16
        echo "balanced classes pay (X-Trans, both guides, both rounds): \
$(faster balanced False True xtrans "shipped shipped-bf16")" ;;
    ncu)
        command -v ncu > /dev/null || { echo "no ncu on this machine"; continue; }
        profile_one "mlp_bwd_wgmma_kernel" \
            "python tools/step_run.py --arch shipped --sensor xtrans --steps 2 --set f.BALANCED_CLASSES=True" 5 \
            front_bwd_xtrans_balanced
        grep -E "SM Active Cycles|Grid Size|instance value" $OUT/front_bwd_xtrans_balanced.txt | sort -u | head -8 ;;
    wgrad128)
        command -v ncu > /dev/null || { echo "no ncu on this machine"; continue; }
        wgrad_alone_script /tmp/wgrad128.py 4 128 86 86
        profile_one "wgrad_tf32_kernel" "python /tmp/wgrad128.py" 1 wgrad128_alone
        grep -E "SM Active Cycles|Grid Size|instance value|Executed Instructions  " $OUT/wgrad128_alone.txt | sort -u | head -8 ;;
    esac
done
echo "=== done $(date +%T)"
