#!/bin/bash
# Session 38's second call (not run in session 38: the device time ran out in refused starts): kpnt's TF32 weight
# gradient of the float32 guide's 3x3s (kernels/guide_wgrad.cu,
# guide_train.FUSED_WGRAD) and the update kernels (call 1: their tests passed under memcheck; the graphed X-Trans
# steps 0.47 ms faster, H100).
#   tests     every CUDA test (the whole suite: FUSED_WGRAD and FUSED_UPDATE on by default); the later parts run only
#             if none failed
#   convs     tools/conv_algos.py with kpnt's kernel beside cuDNN's passes
#   steps     point 2's rows with FUSED_WGRAD off and on, alternated over two rounds (one file, $OUT/steps.txt)
#   spread    point 2's rows (shipped, shipped-bf16) with front_level.UNEVEN_CLASSES_SPREAD 1 and 4, alternated over
#             two rounds ($OUT/spread.txt): the X-Trans front backward's classes (4:1:4) over more blocks
#   memcheck  compute-sanitizer over the weight-gradient kernel's tests
#   parity    point 4 on the float32 guide with the kernel: shipped, both sensors, 4 seeds each
#   full      the full bench_kernels.py --no-compile --parity-steps 0 --reps 20 with the switches that paid
#   profile   where the graphed X-Trans step's small kernels come from (step_breakdown.py --callers), same switches
# All parts take about 12 minutes, more than a call may: split them over two calls (the first decides the switches),
#   PARTS="tests convs steps spread memcheck" bash tools/gpu_calls/s38_two.sh      (about 7 minutes)
#   WGRAD=... SPREAD=... PARTS="parity full profile" bash tools/gpu_calls/s38_two.sh (about 5 minutes)
PARTS=${PARTS:-tests convs steps spread memcheck parity full profile}
source "$(dirname "$0")/preamble.sh"
# Point 2's rows with a module switch at two values, alternated over two rounds, appended to $OUT/$1.txt under
# "--- round R, $2=V" headers: $1 the file's stem, $2 the label, $3 the python statement with VALUE for the value,
# $4 and $5 the values, $6 --step-archs.
ab_rounds() {
    local stem=$1 label=$2 statement=$3 archs=$6 value
    for round in 1 2; do
        for value in "$4" "$5"; do
            echo "--- round $round, $label=$value" >> $OUT/$stem.txt
            timeout 100 bash -c "bench '${statement//VALUE/$value}' $OUT/step.txt --train-steps-only \
                --step-archs $archs --reps 10"
            cat $OUT/step.txt >> $OUT/$stem.txt
            echo "round $round, $label=$value: $(grep -E "checks:" $OUT/step.txt)"
            grep -E "FAIL" $OUT/step.txt | head -3
            grep -A5 "== train step 4x512" $OUT/step.txt | tail -4
        done
    done
    rm -f $OUT/step.txt
}
# $3 when every graphed step of sensors $4 and architectures $5 (space-separated) in $OUT/$1.txt (ab_rounds' file)
# was faster with the value $3 than with $2 in both rounds, else $2.
faster() {
    awk -v old="$2" -v new="$3" -v sensors="$4" -v archs="$5" '
        BEGIN {ns = split(sensors, S, " "); na = split(archs, A, " ")
               for (i in S) want_s[S[i]] = 1; for (i in A) want_a[A[i]] = 1}
        /^--- round/ {split($4, kv, "="); v = kv[2]; r = $3; sub(",", "", r)}
        ($1 in want_s) && ($2 in want_a) && !((r, v, $1, $2) in t) {t[r, v, $1, $2] = $6; n++}
        END {ok = (n == 2 * 2 * ns * na)
             for (r = 1; r <= 2; r++) for (i = 1; i <= ns; i++) for (j = 1; j <= na; j++)
                 if (t[r, new, S[i], A[j]] >= t[r, old, S[i], A[j]]) ok = 0
             print ok ? new : old}' $OUT/$1.txt
}
# The switches the parity, full and profile parts run with: decided by the steps and spread parts when they run,
# else given (a second call: WGRAD=True SPREAD=4 PARTS="parity full profile" bash tools/gpu_calls/s38_two.sh).
WGRAD=${WGRAD:-True}
SPREAD=${SPREAD:-1}
switches() { echo "g.FUSED_WGRAD = $WGRAD; import kpnt.ops._cuda.front_level as f; f.UNEVEN_CLASSES_SPREAD = $SPREAD"; }
OK=1
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    [ $OK = 1 ] || { echo "skipped: a CUDA test failed"; continue; }
    case $part in
    tests)
        cuda_tests 150
        grep -qE " passed" $OUT/tests.txt && ! grep -qE "failed|^ERROR" $OUT/tests.txt || OK=0 ;;
    convs)
        timeout 120 python tools/conv_algos.py --reps 20 > $OUT/convs.txt 2>&1
        grep -E "^#|wgrad|Error|error" $OUT/convs.txt | grep -v bfloat16 | head -20 ;;
    steps)
        ab_rounds steps FUSED_WGRAD "g.FUSED_WGRAD = VALUE" False True shipped
        WGRAD=$(faster steps False True "bayer xtrans" shipped)
        echo "the weight-gradient kernel pays: $WGRAD (the parity, full and profile parts run with FUSED_WGRAD = $WGRAD)" ;;
    spread)
        ab_rounds spread SPREAD "import kpnt.ops._cuda.front_level as f; f.UNEVEN_CLASSES_SPREAD = VALUE" 1 4 \
            shipped,shipped-bf16
        SPREAD=$(faster spread 1 4 xtrans "shipped shipped-bf16")
        echo "spread chosen for the parity, full and profile parts: $SPREAD" ;;
    memcheck)
        timeout 90 compute-sanitizer --tool memcheck python -m pytest -q -p no:cacheprovider \
            tests/cuda/test_guide_wgrad.py -k "matches_float64 and not 4x128x86x86 or bad_input" > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|passed|failed" $OUT/memcheck.txt | tail -3 ;;
    parity)
        timeout 150 bash -c "bench '$(switches)' $OUT/parity.txt --parity-only --parity-archs shipped --parity-seeds ${SEEDS:-4}"
        grep -E "^parity|check training parity" $OUT/parity.txt ;;
    full)
        timeout ${FULL_S:-240} bash -c "bench '$(switches)' $OUT/full.txt --no-compile --parity-steps 0 --reps 20"
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A9 "targets, this run" $OUT/full.txt | head -10
        grep -A6 "== train step 4x512" $OUT/full.txt ;;
    profile)
        timeout 120 bash -c "tool '$(switches)' $OUT/breakdown.txt step_breakdown.py --archs shipped shipped-bf16 \
            --sensors xtrans --graphed --top 14 --callers 30"
        grep -v Warning $OUT/breakdown.txt | grep -vE "^\s*$" | head -60 ;;
    esac
done
echo "=== done $(date +%T)"
true
