#!/bin/bash
# Session 30, call 7: the width-64 backward's proxy fence moved from right after each step's dZ stores to just before
# the next step's barrier (the stores' latency under the dW wait and the dA issue), and the activation loads to the
# step's start.  Carries .gpu30/h_kernels (HEAD fedbf3b, calls 3-4's kernels).  About 4 minutes.
#   ab     tools/mlp_bwd_breakdown.py --widths 64 on the working tree and h, alternating
#   tests  every CUDA test
#   race   compute-sanitizer racecheck of the width-64 ops (plain, several tiles a block, and grouped)
PARTS=${PARTS:-ab tests race}
export TORCH_CUDA_ARCH_LIST=9.0
KPNT_KERNELS_DIR=$PWD/.gpu30/h_kernels KPNT_CACHE_DIR=/tmp/kc_h python -c "
import time, kpnt._backend as b; t = time.time(); b.load(); print('h built in %.1f s' % (time.time() - t))" &
source "$(dirname "$0")/preamble.sh"
wait
for part in $PARTS; do
    echo "=== $part"
    case $part in
    ab)
        for v in new h new h new h; do
            if [ $v = new ]; then env=""; else env="KPNT_KERNELS_DIR=$PWD/.gpu30/${v}_kernels KPNT_CACHE_DIR=/tmp/kc_$v"; fi
            echo "--- $v" >> $OUT/ab.txt
            env $env timeout 60 python tools/mlp_bwd_breakdown.py --widths 64 --reps 30 2>&1 | grep -v -i warn >> $OUT/ab.txt
        done
        grep -E "^---|^== |mlp_bwd_wgmma" $OUT/ab.txt | cut -c1-60,90-140 ;;
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30
        grep -E "^E  " $OUT/tests.txt | head -20 ;;
    race)
        cat > /tmp/op_run.py <<'PY'
import sys, torch
sys.path.insert(0, "tests/cuda")
from test_fused_mlp import SLOPE, features, weights
from kpnt.ops import _cuda
for dims in ([32, 64, 16, 6], [32, 64, 32, 4]):
    for P in (129, 5_003, 20_000):
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
        PYTHONPATH=$PWD timeout 100 compute-sanitizer --tool racecheck python /tmp/op_run.py > $OUT/racecheck.txt 2>&1
        echo "racecheck: $(grep -E 'RACECHECK SUMMARY|done' $OUT/racecheck.txt | tr '\n' ' ')" ;;
    esac
done
