#!/bin/bash
# Session 34's third call, on the defaults of its second (FUSED_PROJ_TF32, FUSED_ADAM on):
#   full      as in s34_second.sh (not in the default PARTS: the second call runs it)
#   epilogue  (not in the default PARTS: two refused starts left too little device time) the bf16 step with the
#             3x3 convolutions' bias + ReLU inside cuDNN (guide_train.CUDNN_EPILOGUE) against the bias_relu kernel (the guide probe gave -0.36 ms (Bayer, session 34) and +0.57 ms
#             (session 33): noise or not)
#   autotune  point 2's rows with cuDNN autotuning on, reference and fused alike (the float32 guide's TF32 weight
#             gradients ran at ~100 TFLOP/s on cuDNN's default plan in the second call: 2.95 of the 14.45 ms)
#   parity    the bf16 guide's parity on these kernels, Bayer seeds 11-16 (session 33: -0.063 dB over 5 seeds)
PARTS=${PARTS:-autotune parity}   # session 34 ran PARTS=autotune: three refused starts left ~6 minutes
source "$(dirname "$0")/preamble.sh"
bench() {  # $1: python statements run first (switches), $2: output file, then bench_kernels.py's arguments
    local pre=$1 out=$2
    shift 2
    python -c "
import runpy, sys
import kpnt.ops._cuda.guide_train as g
$pre
sys.argv = ['bench_kernels.py'] + sys.argv[1:]
sys.path.insert(0, 'tools')   # bench_kernels.py imports its sibling modules
runpy.run_path('tools/bench_kernels.py', run_name='__main__')" "$@" > $out 2>&1
}
for part in $PARTS; do
    echo "=== $part"
    case $part in
    full)
        timeout ${FULL_S:-300} python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 \
            > $OUT/full.txt 2>&1
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A9 "targets, this run" $OUT/full.txt | head -10 ;;
    epilogue)
        for on in True False; do
            timeout 60 bash -c "$(declare -f bench); bench 'g.CUDNN_EPILOGUE = $on' $OUT/epilogue_$on.txt \
                --train-steps-only --step-archs shipped-bf16 --reps 10"
            echo "CUDNN_EPILOGUE=$on"; grep -E "checks:" $OUT/epilogue_$on.txt; grep -A3 "== train step 4x512" \
                $OUT/epilogue_$on.txt | tail -2
        done ;;
    autotune)
        timeout 150 python tools/bench_kernels.py --train-steps-only --step-archs shipped,shipped-bf16 --reps 10 \
            --cudnn-benchmark on > $OUT/autotune.txt 2>&1
        grep -E "checks:|FAIL" $OUT/autotune.txt | head -4; grep -A6 "== train step 4x512" $OUT/autotune.txt ;;
    parity)
        timeout ${PARITY_S:-130} python tools/bench_kernels.py --parity-only --parity-archs shipped-bf16:bayer \
            --parity-seeds 6 --parity-first-seed 11 > $OUT/parity_bf16.txt 2>&1
        grep -E "^parity|check" $OUT/parity_bf16.txt | tail -3 ;;
    esac
done
true
