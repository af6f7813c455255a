#!/bin/bash
# Written in session 39 for the next session's calls: the questions session 39 left. All five parts take about 10
# minutes, more than a call may: PARTS="rows front_ncu wgrad_ncu ops" (the default, about 7 minutes), then
# PARTS=parity (about 4).  Session 40 got no machine (ten refused starts and one machine taken back before its call
# finished): it had reordered the first call by what a claim rests on, PARTS="parity rows ops" (about 6 minutes:
# point 4's graphed parity, then the candidate default, then the census), then PARTS="front_ncu wgrad_ncu".
#   rows       front_level.ROWS_BY_SITE (new, off): its test, then point 2's rows off / on over two rounds
#              ($OUT/rows.txt): a class's rows grouped by repeat position, so that a warp's rows share one tap layout
#   parity     point 4 with the fused side trained through GraphedStep as kpnt-train trains it (the update
#              kernels included; every earlier parity run trained it eagerly): shipped, both sensors, 4 seeds
#   front_ncu  Nsight Compute on the front level's MLP backward (Cfg<32, 64, 32, 4>) in an eager shipped step,
#              Bayer and X-Trans: why X-Trans's takes 1.0 ms against Bayer's 0.77 (the same MLP and rows; not the
#              classes' imbalance, session 39), and X-Trans's with ROWS_BY_SITE
#   wgrad_ncu  Nsight Compute on kpnt's TF32 weight-gradient kernel inside an eager shipped Bayer step and alone on
#              random operands of the same shape: why it takes 0.204 ms a call in the step and 0.152 alone
#              (ncu locks the clocks, so a difference that remains is not the clock)
#   ops        tools/step_ops.py (new): the ops of the graph's body by call site, X-Trans and Bayer, shipped
#              ($OUT/ops.txt): where the ~190 small launches come from (the profiler names no frame there)
PARTS=${PARTS:-rows front_ncu wgrad_ncu ops}
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
source "$(dirname "$0")/ncu_profile.sh"   # profile_one (moved there in session 42)
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    rows)
        timeout 90 python -m pytest -q -p no:cacheprovider tests/cuda/test_front_level.py > $OUT/rows_test.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/rows_test.txt | head -6
        grep -qE "failed|^ERROR" $OUT/rows_test.txt && { echo "rows: a front test failed, no timing"; continue; }
        ab_rounds rows ROWS_BY_SITE "import kpnt.ops._cuda.front_level as f; f.ROWS_BY_SITE = VALUE" False True \
            shipped,shipped-bf16
        echo "rows by site pay (X-Trans, both guides, both rounds): $(faster rows False True xtrans "shipped shipped-bf16")"
        echo "rows by site pay (Bayer): $(faster rows False True bayer "shipped shipped-bf16")" ;;
    ops)
        for sensor in xtrans bayer; do
            PYTHONPATH=$PWD timeout 90 python tools/step_ops.py --arch shipped --sensor $sensor --graphed-body --top 70 \
                >> $OUT/ops.txt 2>&1
        done
        grep -E "^==|in all" $OUT/ops.txt ;;
    parity)
        timeout 200 bash -c "bench '' $OUT/parity.txt --parity-only --parity-archs shipped --parity-seeds 4 \
            --parity-graphed"
        grep -E "^parity|check training parity" $OUT/parity.txt ;;
    front_ncu)
        command -v ncu > /dev/null || { echo "no ncu on this machine"; continue; }
        for sensor in bayer xtrans; do
            profile_one "mlp_bwd_wgmma_kernel.*Cfg<32, 64, 32, 4" \
                "python tools/step_run.py --arch shipped --sensor $sensor --steps 2" 1 front_bwd_$sensor
        done
        profile_one "mlp_bwd_wgmma_kernel.*Cfg<32, 64, 32, 4" \
            "python tools/step_run.py --arch shipped --sensor xtrans --steps 2 --set f.ROWS_BY_SITE=True" 1 \
            front_bwd_xtrans_by_site
        # Added in session 41 (front_level.TAP_ORDER, new then): X-Trans with the searched tap order.
        profile_one "mlp_bwd_wgmma_kernel.*Cfg<32, 64, 32, 4" \
            "python tools/step_run.py --arch shipped --sensor xtrans --steps 2 --set f.TAP_ORDER=f.SEARCHED_TAP_ORDER" 1 \
            front_bwd_xtrans_taps ;;
    wgrad_ncu)
        command -v ncu > /dev/null || { echo "no ncu on this machine"; continue; }
        profile_one "wgrad_tf32_kernel" "python tools/step_run.py --arch shipped --sensor bayer --steps 2 \
            --set g.FUSED_WGRAD=True" 15 wgrad_in_step
        wgrad_alone_script /tmp/wgrad_alone.py 4 64 256 256
        profile_one "wgrad_tf32_kernel" "python /tmp/wgrad_alone.py" 1 wgrad_alone ;;
    esac
done
echo "=== done $(date +%T)"
