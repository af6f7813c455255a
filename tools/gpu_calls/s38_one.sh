#!/bin/bash
# Session 38's first call.
#   tests     every CUDA test with FUSED_PROJ_PROLOGUE on by default (session 37's second call ran them with it off)
#   memcheck  the guide's passes under compute-sanitizer, with 9522cae's sanitize tool (the projection forward run with
#             the prologue setting opposite to the default, so both kernels are covered)
#   convs     tools/conv_algos.py: cuDNN's 3x3 fprop / dgrad / wgrad at the shipped guides' shapes, by dtype, layout
#             and autotuning, with their errors against float64
#   profile   tools/step_breakdown.py --graphed on this machine with the prologue on (session 35's is an H100's)
PARTS=${PARTS:-tests memcheck convs profile}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        cuda_tests 150
        python -c "import kpnt.ops._cuda.guide_train as g; print('FUSED_PROJ_PROLOGUE =', g.FUSED_PROJ_PROLOGUE)" ;;
    memcheck)
        guide_memcheck 150 ;;
    convs)
        timeout 150 python tools/conv_algos.py > $OUT/convs.txt 2>&1; tail -60 $OUT/convs.txt ;;
    profile)
        timeout 150 python tools/step_breakdown.py --archs shipped shipped-bf16 --graphed --top 14 \
            > $OUT/breakdown.txt 2>&1; grep -v Warning $OUT/breakdown.txt | head -90 ;;
    esac
done
echo "=== done $(date +%T)"
