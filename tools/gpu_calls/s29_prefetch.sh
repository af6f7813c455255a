#!/bin/bash
# Session 29, call 6: the split backward's stored data pass loads the next tile's dL/dy and sign bits while this
# tile walks back, and the wgmma storing forward the next tile's inputs.  About 4 minutes, nothing to carry.
#   tests     every CUDA test
#   memcheck  compute-sanitizer memcheck of the 128-wide training step (storing forward, data pass, dW pass)
#   prof      tools/mlp_bwd_breakdown.py --widths 128
#   bench     tools/bench_kernels.py --no-model: point 3's rows
PARTS=${PARTS:-tests bench memcheck prof}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30
        grep -E "^E  " $OUT/tests.txt | head -20 ;;
    memcheck)
        cat > /tmp/step_run.py <<'PY'
import sys, torch
sys.path.insert(0, "tests/cuda")
from test_fused_mlp import SLOPE, features, weights
from kpnt.ops import _cuda
for dims in ([32, 128, 16, 6], [32, 128, 80, 4]):
    for P in (1, 129, 300, 5_003):
        ws = weights(dims, seed=P)
        x = features(P, dims[0], seed=P + 1).requires_grad_()
        g = torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), [x, *ws], torch.randn(P, dims[2], device="cuda"))
    wg = weights(dims, groups=4, seed=3)
    cls = torch.randint(0, 3, (9_001,), device="cuda")
    g = torch.autograd.grad(_cuda.fused_mlp_grouped(features(9_001, dims[0]), cls, wg, SLOPE), wg,
                            torch.randn(9_001, dims[2], device="cuda"))
torch.cuda.synchronize()
print("step run done")
PY
        PYTHONPATH=$PWD timeout 150 compute-sanitizer --tool memcheck --leak-check no python /tmp/step_run.py > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|done" $OUT/memcheck.txt | tail -3 ;;
    prof)
        timeout 100 python tools/mlp_bwd_breakdown.py --widths 128 > $OUT/prof.txt 2>&1
        grep -v -i warn $OUT/prof.txt | head -20 ;;
    bench)
        timeout 150 python tools/bench_kernels.py --no-model --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "fused fwd|checks:|FAIL" $OUT/bench.txt | head -40
        grep -A8 "issue 14's targets" $OUT/bench.txt ;;
    esac
done
