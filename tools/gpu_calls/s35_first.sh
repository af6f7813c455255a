#!/bin/bash
# For session 35's first call (written in session 34 as its third call; five refused starts used up its device
# time before it ran), on session 34's defaults (FUSED_PROJ_TF32, FUSED_ADAM on). About 8 minutes.
#   tf32x     the float32 twins at width 128 (the X-Trans guide; written in session 34 after its last call, not yet
#             run, not routed: guide_train.TF32_WIDTHS): tests/cuda/test_guide_train.py, memcheck of the guide's
#             passes (mlp_sanitize_run.py --guide routes every compiled width), and the shipped step with
#             TF32_WIDTHS = (32, 64, 128) against the default in one call (X-Trans row; estimate -0.2 to -0.6 ms
#             of 7.61)
#   autotune  point 2's rows with cuDNN autotuning off and on, reference and fused alike, in one call (the float32
#             guide's TF32 weight gradients of the 3x3s ran at ~100 TFLOP/s on cuDNN's heuristic plan in session
#             34: 2.95 of the graphed Bayer step's 14.45 ms; their forward and data gradient run at ~200). If
#             autotuning pays, kpnt-train could turn torch.backends.cudnn.benchmark on (its shapes are fixed).
#   parity    the bf16 guide's parity on these kernels, Bayer seeds 11-16 (session 33: -0.063 dB over 5 seeds on
#             them, standard error 0.030; -0.011 over 9 on session 32's)
#   epilogue  the bf16 step with the 3x3 convolutions' bias + ReLU inside cuDNN (guide_train.CUDNN_EPILOGUE)
#             against the bias_relu kernel (the guide probe gave -0.36 ms in session 34 and +0.57 in session 33)
PARTS=${PARTS:-tf32x autotune parity epilogue}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    epilogue)
        for on in True False; do
            timeout 60 bash -c "bench 'g.CUDNN_EPILOGUE = $on' $OUT/epilogue_$on.txt \
                --train-steps-only --step-archs shipped-bf16 --reps 10"
            echo "CUDNN_EPILOGUE=$on"; grep -E "checks:" $OUT/epilogue_$on.txt; grep -A3 "== train step 4x512" \
                $OUT/epilogue_$on.txt | tail -2
        done ;;
    tf32x)
        timeout 90 python -m pytest -q -p no:cacheprovider tests/cuda/test_guide_train.py > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^E  |passed|failed" $OUT/tests.txt | head -20
        timeout 90 compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py --guide --no-mlp \
            > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|ok|done" $OUT/memcheck.txt | tail -6
        for widest in 64 128; do     # TF32_WIDTHS up to this width
            timeout 100 bash -c "bench 'g.TF32_WIDTHS = tuple(w for w in g.PROJ_WIDTHS if w <= $widest)' \
                $OUT/tf32x_steps_$widest.txt --train-steps-only --step-archs shipped --reps 10"
            echo "TF32 twins up to width $widest"; grep -E "checks:" $OUT/tf32x_steps_$widest.txt
            grep -A3 "== train step 4x512" $OUT/tf32x_steps_$widest.txt | tail -2
        done ;;
    autotune)
        for on in off on; do
            timeout 150 python tools/bench_kernels.py --train-steps-only --step-archs shipped,shipped-bf16 \
                --reps 10 --cudnn-benchmark $on > $OUT/autotune_$on.txt 2>&1
            echo "cuDNN autotuning $on"; grep -E "checks:|FAIL" $OUT/autotune_$on.txt | head -4
            grep -A5 "== train step 4x512" $OUT/autotune_$on.txt | tail -4
        done ;;
    parity)
        timeout ${PARITY_S:-130} python tools/bench_kernels.py --parity-only --parity-archs shipped-bf16:bayer \
            --parity-seeds 6 --parity-first-seed 11 > $OUT/parity_bf16.txt 2>&1
        grep -E "^parity|check" $OUT/parity_bf16.txt | tail -3 ;;
    esac
done
true
