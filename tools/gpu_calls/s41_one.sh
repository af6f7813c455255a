#!/bin/bash
# Session 41's calls: session 40's questions (s40_one.sh, which no machine ran) with a new first part, taps.
# Order: PARTS="taps parity ops" (about 7 minutes), then PARTS="front_ncu wgrad_ncu rows" (about 6).
#   taps       front_level.TAP_ORDER (new, off): its CUDA tests (tests/cuda/test_front_level.py, the ROWS_BY_SITE
#              and tap-order tests included), then point 2's rows with the canonical and the searched tap order
#              over two rounds ($OUT/taps.txt). The searched order reads 21-22 % fewer 32-byte sectors a tap load
#              (tools/front_sectors.py, a CPU model); this measures whether that moves the step
#   parity, rows, ops, wgrad_ncu   as s40_one.sh
#   front_ncu  as s40_one.sh, with a fourth profile: X-Trans with the searched tap order
PARTS=${PARTS:-taps parity ops}
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
SECTIONS="--set full"   # the stall metrics the raw page is read for below (session 30 read them so)
# ncu over $2 (a command) for the kernels matching regex $1 (demangled names), skipping $3 launches, into
# $OUT/$4.txt; the lines that tell memory- from latency-bound shown.
profile_one() {
    PYTHONPATH=$PWD timeout 150 ncu --kernel-name-base demangled --kernel-name "regex:$1" --launch-skip $3 --launch-count 1 \
        $SECTIONS -o /tmp/$4 $2 > /tmp/$4.log 2>&1 || tail -5 /tmp/$4.log
    ncu -i /tmp/$4.ncu-rep --print-details all > $OUT/$4.txt 2>&1
    echo "--- $4"
    grep -E "^\s+(Duration|Memory Throughput|DRAM Throughput|L1/TEX Hit Rate|L2 Hit Rate|Compute \(SM\) Throughput|\
Warp Cycles Per Issued Instruction|Achieved Occupancy|SM Frequency)" $OUT/$4.txt | head -16
    # The stall reasons, cycles per issued instruction (as session 30's tools/gpu_calls/s30_stalls.sh read them).
    ncu -i /tmp/$4.ncu-rep --page raw --csv 2>/dev/null | python -c "
import csv, sys
rows = list(csv.reader(sys.stdin))
stalls = [(n, v) for n, v in zip(rows[0], rows[-1])
          if 'issue_stalled' in n and ('per_warp_active' in n or 'per_issue_active' in n) and 'not_issued' not in n]
def num(v):
    try: return float(v.replace(',', ''))
    except ValueError: return 0.0
for n, v in sorted(stalls, key=lambda s: -num(s[1]))[:8]: print('   ', n, v)" | tee -a $OUT/$4.txt   # a call returns at most 8 files
}
for part in $PARTS; do
    echo "=== $part $(date +%T)"
    case $part in
    taps)
        timeout 120 python -m pytest -q -p no:cacheprovider tests/cuda/test_front_level.py > $OUT/taps_test.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/taps_test.txt | head -6
        grep -qE "failed|^ERROR" $OUT/taps_test.txt && { echo "taps: a front test failed, no timing"; continue; }
        ab_rounds taps TAP_ORDER "import kpnt.ops._cuda.front_level as f; f.TAP_ORDER = VALUE" \
            None f.SEARCHED_TAP_ORDER shipped,shipped-bf16
        echo "tap order (X-Trans, both guides, both rounds): \
$(faster taps None f.SEARCHED_TAP_ORDER xtrans "shipped shipped-bf16")"
        echo "tap order (Bayer): $(faster taps None f.SEARCHED_TAP_ORDER bayer "shipped shipped-bf16")" ;;
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
        profile_one "mlp_bwd_wgmma_kernel.*Cfg<32, 64, 32, 4" \
            "python tools/step_run.py --arch shipped --sensor xtrans --steps 2 --set f.TAP_ORDER=f.SEARCHED_TAP_ORDER" 1 \
            front_bwd_xtrans_taps ;;
    wgrad_ncu)
        command -v ncu > /dev/null || { echo "no ncu on this machine"; continue; }
        profile_one "wgrad_tf32_kernel" "python tools/step_run.py --arch shipped --sensor bayer --steps 2 \
            --set g.FUSED_WGRAD=True" 15 wgrad_in_step
        cat > /tmp/wgrad_alone.py <<'PY'
import torch
from kpnt.ops._cuda.extension import ext, unwrap
g = torch.Generator().manual_seed(1)
gh, z = (t.cuda().contiguous(memory_format=torch.channels_last) for t in
         (torch.randn(4, 64, 256, 256, generator=g) * 1e-3, torch.randn(4, 64, 256, 256, generator=g).relu()))
for _ in range(3):
    unwrap(ext().guide_wgrad(gh, z))
torch.cuda.synchronize()
PY
        profile_one "wgrad_tf32_kernel" "python /tmp/wgrad_alone.py" 1 wgrad_alone ;;
    esac
done
echo "=== done $(date +%T)"
