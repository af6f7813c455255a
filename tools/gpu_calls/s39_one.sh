#!/bin/bash
# Session 39's diagnostic call on the TF32 weight-gradient kernel (kernels/guide_wgrad.cu). Session 39's first call
# (s38_two.sh's first half) found it faster than cuDNN alone at the Bayer shape (0.154 against 0.207 ms) but the
# graphed float32 Bayer step 0.12 ms slower with it, and X-Trans's strips of 32 at half cuDNN's rate.
#   tests      the kernel's tests (X-Trans now in strips of 88)
#   convs      tools/conv_algos.py: the kernel beside cuDNN's passes
#   breakdown  the graphed float32 shipped steps' kernels with FUSED_WGRAD on: where the Bayer step's time went
#   steps      point 2's rows with FUSED_WGRAD off and on, alternated over two rounds ($OUT/steps.txt)
PARTS=${PARTS:-tests convs breakdown steps}
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        timeout 90 python -m pytest -q -p no:cacheprovider tests/cuda/test_guide_wgrad.py > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -10 ;;
    convs)
        timeout 100 bash -c "tool '' $OUT/convs.txt conv_algos.py --reps 20"
        grep -E "wgrad.*(float32 \| nhwc \| off|kpnt)|rror" $OUT/convs.txt ;;
    breakdown)
        timeout 120 bash -c "tool 'g.FUSED_WGRAD = True' $OUT/breakdown.txt step_breakdown.py --archs shipped \
            --sensors bayer xtrans --graphed --top 16"
        grep -v Warning $OUT/breakdown.txt | grep -vE "^\s*$|warn" | head -60 ;;
    steps)
        ab_rounds steps FUSED_WGRAD "g.FUSED_WGRAD = VALUE" False True shipped
        echo "the weight-gradient kernel pays: $(faster steps False True "bayer xtrans" shipped)" ;;
    esac
done
echo "=== done $(date +%T)"
