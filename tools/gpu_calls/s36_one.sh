#!/bin/bash
# Session 36's first call: the questions session 35 left (its s36_first.sh, removed unrun) and s35_full.sh's bench in one
# call, as starts were scarce.
#   tests     every CUDA test: session 35's block-means fix (fd06716) and the projection forward's prologue
#             (guide_train.FUSED_PROJ_PROLOGUE, written after session 35's last call)
#   memcheck  the guide's passes, the prologue among them (mlp_sanitize_run.py --guide)
#   steps     point 2's rows with the prologue off (the committed default) and on, one process each
#   full      the full bench_kernels.py --no-compile --parity-steps 0, with the prologue on only if every CUDA test
#             passed and it made both float32 graphed steps faster (the script says which it ran)
#   parity    point 4 on the float32 X-Trans path with the TF32 twins at width 128: 4 seeds
PARTS=${PARTS:-tests memcheck steps full parity}
source "$(dirname "$0")/preamble.sh"
# True if the graphed float32 step of both sensors (rows "bayer shipped", "xtrans shipped": column 6) is faster in
# bench file $2 (prologue on) than in $1 (off); False if not, or if a row is missing.
prologue_pays() {
    awk '$2 == "shipped" && ($1 == "bayer" || $1 == "xtrans") && !((FILENAME, $1) in t) {t[FILENAME, $1] = $6}
         END {off = ARGV[1]; on = ARGV[2]; faster = 1
              split("bayer xtrans", sensors)
              for (i in sensors) {
                  k = sensors[i]
                  if (!((off, k) in t) || !((on, k) in t) || t[on, k] >= t[off, k]) faster = 0
              }
              print faster ? "True" : "False"}' "$1" "$2"
}
PROLOGUE=False
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    tests)
        cuda_tests 120 ;;
    memcheck)
        guide_memcheck 100 ;;
    steps)
        for on in False True; do
            timeout 130 bash -c "bench 'g.FUSED_PROJ_PROLOGUE = $on' $OUT/steps_prologue_$on.txt --train-steps-only \
                --step-archs shipped,shipped-bf16 --reps 10"
            echo "FUSED_PROJ_PROLOGUE=$on"; grep -E "checks:|FAIL" $OUT/steps_prologue_$on.txt | head -4
            grep -A5 "== train step 4x512" $OUT/steps_prologue_$on.txt | tail -4
        done
        if grep -qE " passed" $OUT/tests.txt 2>/dev/null && ! grep -qE "failed|^ERROR" $OUT/tests.txt; then
            [ "$(prologue_pays $OUT/steps_prologue_False.txt $OUT/steps_prologue_True.txt 2>&1)" = True ] && PROLOGUE=True
        fi
        echo "prologue chosen for the full bench: $PROLOGUE" ;;
    full)
        echo "full bench with FUSED_PROJ_PROLOGUE = $PROLOGUE" | tee $OUT/full_switch.txt
        timeout ${FULL_S:-200} bash -c "bench 'g.FUSED_PROJ_PROLOGUE = $PROLOGUE' $OUT/full.txt --no-compile \
            --parity-steps 0 --reps 20"
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A9 "targets, this run" $OUT/full.txt | head -10
        grep -A6 "== train step 4x512" $OUT/full.txt ;;
    parity)
        timeout ${PARITY_S:-120} python tools/bench_kernels.py --parity-only --parity-archs shipped:xtrans \
            --parity-seeds 4 > $OUT/parity_xtrans.txt 2>&1
        grep -E "^parity|check" $OUT/parity_xtrans.txt | tail -3 ;;
    esac
done
echo "=== end $(date +%T)"
true
