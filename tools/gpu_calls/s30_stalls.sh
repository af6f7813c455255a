#!/bin/bash
# Session 30, call 2: where the width-64 backward (after call 1's descriptors, stmatrix / ldmatrix and early dA)
# still waits, and one candidate beside it.  About 4 minutes.  Carries .gpu30/vb_kernels: each step waits on the
# previous step's dW (and adds it to the running sums) after issuing its own dA, not before.
#   ab     tools/mlp_bwd_breakdown.py --widths 64 on the working tree and vb, alternating
#   ncu    Nsight Compute on the working tree's wgmma backward at 4 M rows: the stall reasons (per issued
#          instruction) and, where sampling works, the SASS lines with the most stall samples
PARTS=${PARTS:-ab ncu}
source "$(dirname "$0")/preamble.sh"
KPNT_KERNELS_DIR=$PWD/.gpu30/vb_kernels KPNT_CACHE_DIR=/tmp/kc_vb python -c "
import time, kpnt._backend as b; t = time.time(); b.load(); print('vb built in %.1f s' % (time.time() - t))"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    ab)
        for v in new vb new vb; do
            if [ $v = new ]; then env=""; else env="KPNT_KERNELS_DIR=$PWD/.gpu30/${v}_kernels KPNT_CACHE_DIR=/tmp/kc_$v"; fi
            echo "--- $v" >> $OUT/ab.txt
            env $env timeout 60 python tools/mlp_bwd_breakdown.py --widths 64 --reps 30 2>&1 | grep -v -i warn >> $OUT/ab.txt
        done
        grep -E "^---|^== |mlp_bwd_wgmma|mlp_fwd_wgmma" $OUT/ab.txt | cut -c1-60,90-140 ;;
    ncu)
        command -v ncu > /dev/null || { echo "no ncu on this machine"; continue; }
        cat > /tmp/bwd64.py <<'PY'
import sys, torch
sys.path.insert(0, "tools")
from kbench_common import COLOUR, SLOPE, make_weights, make_x
from kpnt.ops import _cuda
ws = make_weights(COLOUR, seed=11)
x = make_x(4 * 1024 * 1024, COLOUR[0], seed=12)
gy = torch.randn(x.shape[0], COLOUR[2], device="cuda")
for _ in range(3):
    torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), ws, gy)
torch.cuda.synchronize()
PY
        PYTHONPATH=$PWD timeout 240 ncu --kernel-name regex:mlp_bwd_wgmma_kernel --launch-skip 1 --launch-count 1 \
            --set full --import-source no -o /tmp/bwd64 python /tmp/bwd64.py > $OUT/ncu_log.txt 2>&1
        ncu -i /tmp/bwd64.ncu-rep --print-details all > $OUT/ncu.txt 2>&1
        ncu -i /tmp/bwd64.ncu-rep --page raw --csv 2>/dev/null | python -c "
import csv, sys
rows = list(csv.reader(sys.stdin))
names, vals = rows[0], rows[-1]
for n, v in zip(names, vals):
    if 'issue_stalled' in n and 'per_warp_active' in n and 'not_issued' not in n: print(n, v)
" > $OUT/stalls.txt 2>&1
        ncu -i /tmp/bwd64.ncu-rep --page source --csv --print-source sass > $OUT/sass_src.csv 2>&1
        sort -t' ' -k2 -g -r $OUT/stalls.txt | head -14
        grep -iE "duration|warp cycles per issued|issued warp|eligible warps" $OUT/ncu.txt | head -8
        wc -c $OUT/sass_src.csv ;;
    esac
done
