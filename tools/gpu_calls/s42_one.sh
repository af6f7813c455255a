#!/bin/bash
# Session 42's call on the TF32 weight-gradient kernel (kernels/guide_wgrad.cu). Session 42's ncu (s40_one.sh,
# part wgrad_ncu) found it ran 26 % more mma inside the Bayer step than alone at 4 x 64 x 256 x 256 and took 1.42x
# as long: the step's grid is 258 wide, so strips of 64 left a fifth strip of 2 positions costing a full one.
# Now strips of equal width (56 at 258) and equal runs of lines a block.
#   tests  the kernel's tests (the 258 x 258 grid among them)
#   convs  tools/conv_algos.py at 256, 258 (the step's) and X-Trans's 86: the kernel beside cuDNN's passes
#   steps  point 2's rows with FUSED_WGRAD off and on for 64 channels only (Bayer's guide; X-Trans's 128 stay on
#          cuDNN: a control), alternated over two rounds ($OUT/steps.txt)
PARTS=${PARTS:-tests convs steps}
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        timeout 90 python -m pytest -q -p no:cacheprovider tests/cuda/test_guide_wgrad.py > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -10
        grep -qE "failed|^ERROR" $OUT/tests.txt && { echo "tests failed: no timing"; break; } ;;
    convs)
        timeout 120 bash -c "tool '' $OUT/convs.txt conv_algos.py --reps 20 \
            --shapes 4x64x256x256 4x64x258x258 4x128x86x86"
        grep -E "wgrad.*(float32 \| nhwc \| off|kpnt)|rror" $OUT/convs.txt ;;
    steps)
        ab_rounds steps FUSED_WGRAD "g.FUSED_WGRAD = VALUE; g.WGRAD_WIDTHS = (64,)" False True shipped
        echo "the weight-gradient kernel pays (Bayer): $(faster steps False True bayer shipped)" ;;
    esac
done
echo "=== done $(date +%T)"
