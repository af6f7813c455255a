#!/bin/bash
# Written in session 42 after its device time ran out, for the next session's first call (about 5 minutes):
# front_level.BALANCED_CLASSES (new, off), the X-Trans front backward's blocks as one wave the site classes share
# by their rows (kernels/mlp_bwd_wgmma.cuh block_of_group).
#   balanced  the CUDA front tests (the balanced blocks' test among them; the later parts run only if they pass),
#             the MLP tests (the kernel changed for every caller: the colour levels run it unshared), then point 2's
#             rows with it off / on over two rounds ($OUT/balanced.txt). Bayer's equal classes never take it: a
#             control
#   ncu       the X-Trans front backward with it on under Nsight Compute: are the SMs evenly busy now (session
#             42: min 62 % below and max 24 % above the mean active cycles with equal blocks a class)
PARTS=${PARTS:-balanced ncu}
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
source "$(dirname "$0")/ncu_profile.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    balanced)
        timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda/test_front_level.py tests/cuda/test_fused_mlp.py \
            tests/cuda/test_mlp_bwd_wgmma.py tests/cuda/test_colour_level.py > $OUT/balanced_test.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/balanced_test.txt | head -8
        grep -qE "failed|^ERROR" $OUT/balanced_test.txt && { echo "balanced: a test failed, no timing"; break; }
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
    esac
done
echo "=== done $(date +%T)"
