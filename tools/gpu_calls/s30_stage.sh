#!/bin/bash
# Session 30, call 3: the width-64 backward's staging of the next tile (StagedRows::issue, ~12 % of call 2's stall
# samples): a contiguous fast path for whole unpermuted tiles, issued inside the walk's first step (after its dW)
# instead of before the walk.  Variants carried under .gpu30/: h_kernels (HEAD 7e34ace: call 1's kernels),
# vf_kernels (the fast path only).  About 6 minutes.
#   ab        tools/mlp_bwd_breakdown.py --widths 64 on the working tree, h and vf, alternating
#   tests     every CUDA test
#   bench     tools/bench_kernels.py --no-model: point 3's rows and the MLP checks
#   sanitize  compute-sanitizer memcheck and racecheck of the width-64 and 128 ops (bare and grouped)
PARTS=${PARTS:-ab tests bench sanitize}
source "$(dirname "$0")/preamble.sh"
for v in h vf; do
    KPNT_KERNELS_DIR=$PWD/.gpu30/${v}_kernels KPNT_CACHE_DIR=/tmp/kc_$v python -c "
import time, kpnt._backend as b; t = time.time(); b.load(); print('$v built in %.1f s' % (time.time() - t))" &
done
wait
for part in $PARTS; do
    echo "=== $part"
    case $part in
    ab)
        for v in new h vf new h vf; do
            if [ $v = new ]; then env=""; else env="KPNT_KERNELS_DIR=$PWD/.gpu30/${v}_kernels KPNT_CACHE_DIR=/tmp/kc_$v"; fi
            echo "--- $v" >> $OUT/ab.txt
            env $env timeout 60 python tools/mlp_bwd_breakdown.py --widths 64 --reps 30 2>&1 | grep -v -i warn >> $OUT/ab.txt
        done
        grep -E "^---|^== |mlp_bwd_wgmma|mlp_fwd_wgmma" $OUT/ab.txt | cut -c1-60,90-140 ;;
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30
        grep -E "^E  " $OUT/tests.txt | head -20 ;;
    bench)
        timeout 150 python tools/bench_kernels.py --no-model --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "time fused fwd|checks:|FAIL" $OUT/bench.txt | head -12
        grep -A6 "issue 14's targets" $OUT/bench.txt ;;
    sanitize)
        cat > /tmp/op_run.py <<'PY'
import sys, torch
sys.path.insert(0, "tests/cuda")
from test_fused_mlp import SLOPE, features, weights
from kpnt.ops import _cuda
for dims in ([32, 64, 16, 6], [32, 64, 32, 4], [32, 128, 16, 6]):
    for P in (1, 129, 300, 5_003, 20_000):
        ws = weights(dims, seed=P)
        x = features(P, dims[0], seed=P + 1).requires_grad_()
        g = torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), [x, *ws], torch.randn(P, dims[2], device="cuda"))
    wg = weights(dims, groups=4, seed=3)
    cls = torch.randint(0, 3, (9_001,), device="cuda")
    g = torch.autograd.grad(_cuda.fused_mlp_grouped(features(9_001, dims[0]), cls, wg, SLOPE), wg,
                            torch.randn(9_001, dims[2], device="cuda"))
torch.cuda.synchronize()
print("op run done")
PY
        for tool in memcheck racecheck; do
            PYTHONPATH=$PWD timeout 120 compute-sanitizer --tool $tool python /tmp/op_run.py > $OUT/$tool.txt 2>&1
            echo "$tool: $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|done' $OUT/$tool.txt | tr '\n' ' ')"
        done ;;
    esac
done
