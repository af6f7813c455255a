#!/bin/bash
# Session 38's first call.
#   tests     every CUDA test with FUSED_PROJ_PROLOGUE on by default (session 37's second call ran them with it off)
#             and the new update kernels' tests (tests/cuda/test_train_update.py; GraphedStep on them by default)
#   steps     point 2's rows with kpnt.train.graph_step.FUSED_UPDATE off and on, alternated over two rounds
#   memcheck  the guide's passes under compute-sanitizer (9522cae's sanitize tool: the projection forward run with the
#             prologue setting opposite to the default, so both kernels are covered), then the update kernels' tests
#   convs     tools/conv_algos.py: cuDNN's 3x3 fprop / dgrad / wgrad at the shipped guides' shapes, by dtype, layout
#             and autotuning, with their errors against float64
#   profile   tools/step_breakdown.py --graphed on this machine (the update kernels on)
PARTS=${PARTS:-tests steps memcheck convs profile}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        cuda_tests 150
        python -c "import kpnt.ops._cuda.guide_train as g, kpnt.train.graph_step as s
print('FUSED_PROJ_PROLOGUE =', g.FUSED_PROJ_PROLOGUE, ' FUSED_UPDATE =', s.FUSED_UPDATE)" ;;
    steps)
        for round in 1 2; do
            for on in False True; do
                timeout 100 bash -c "bench 'import kpnt.train.graph_step as s; s.FUSED_UPDATE = $on' \
                    $OUT/steps_${on}_$round.txt --train-steps-only --step-archs shipped,shipped-bf16,default --reps 10"
                echo "round $round, FUSED_UPDATE=$on: $(grep -E "checks:" $OUT/steps_${on}_$round.txt)"
                grep -E "FAIL" $OUT/steps_${on}_$round.txt | head -3
                grep -A7 "== train step 4x512" $OUT/steps_${on}_$round.txt | tail -6
            done
        done ;;
    memcheck)
        guide_memcheck 120
        timeout 120 compute-sanitizer --tool memcheck python -m pytest -q -p no:cacheprovider \
            tests/cuda/test_train_update.py > $OUT/memcheck_update.txt 2>&1
        grep -E "ERROR SUMMARY|passed|failed" $OUT/memcheck_update.txt | tail -3 ;;
    convs)
        timeout 150 python tools/conv_algos.py > $OUT/convs.txt 2>&1; tail -60 $OUT/convs.txt ;;
    profile)
        timeout 150 python tools/step_breakdown.py --archs shipped shipped-bf16 --graphed --top 14 \
            > $OUT/breakdown.txt 2>&1; grep -v Warning $OUT/breakdown.txt | head -90 ;;
    esac
done
echo "=== done $(date +%T)"
