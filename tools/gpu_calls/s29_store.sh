#!/bin/bash
# Session 29, call 3: the training forward of 128-wide MLPs stores the activations (kpnt::mlp_fwd_store; the data
# pass then neither reads x nor recomputes), first run.  About 5 minutes, nothing to carry.
#   tests     every CUDA test (new in tests/cuda/test_mlp_dw_wgmma.py: stored against recomputed, bit for bit)
#   memcheck  compute-sanitizer memcheck and racecheck of the stored forward and backward (both 128-wide shapes)
#   prof      tools/mlp_bwd_breakdown.py --widths 128: the data pass and the dW pass
#   bench     tools/bench_kernels.py --no-model: point 3's rows, the mma.sync backward beside the wgmma one
PARTS=${PARTS:-tests memcheck prof bench}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30
        grep -E "^E  " $OUT/tests.txt | head -20 ;;
    memcheck)
        # The stored forward and its backward without the tests' profiler (CUPTI fails under the sanitizer).
        cat > /tmp/store_run.py <<'PY'
import sys, torch
sys.path.insert(0, "tests/cuda")
from test_fused_mlp import SLOPE, features, weights
from kpnt.ops import _cuda
small = sys.argv[1:] == ["small"]  # racecheck: a few tiles
for dims in ([32, 128, 16, 6], [32, 128, 80, 4]):
    for P in ((1, 129, 300) if small else (1, 129, 20_011)):
        ws = weights(dims, seed=P)
        x = features(P, dims[0], seed=P + 1).requires_grad_()
        g = torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), [x, *ws], torch.randn(P, dims[2], device="cuda"))
    wg = weights(dims, groups=4, seed=3)
    n = 700 if small else 9_001
    cls = torch.randint(0, 3, (n,), device="cuda")
    g = torch.autograd.grad(_cuda.fused_mlp_grouped(features(n, dims[0]), cls, wg, SLOPE), wg,
                            torch.randn(n, dims[2], device="cuda"))
torch.cuda.synchronize()
print("store run done")
PY
        PYTHONPATH=$PWD timeout 150 compute-sanitizer --tool memcheck --leak-check no python /tmp/store_run.py > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|done" $OUT/memcheck.txt | tail -3
        PYTHONPATH=$PWD timeout 100 compute-sanitizer --tool racecheck python /tmp/store_run.py small > $OUT/racecheck.txt 2>&1
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|done" $OUT/racecheck.txt | tail -4 ;;
    prof)
        timeout 100 python tools/mlp_bwd_breakdown.py --widths 128 > $OUT/prof.txt 2>&1
        cat $OUT/prof.txt | grep -v Warn | head -20 ;;
    bench)
        timeout 150 python tools/bench_kernels.py --no-model --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "fused fwd|eager f16|checks:|FAIL" $OUT/bench.txt | head -40
        grep -A8 "issue 14's targets" $OUT/bench.txt ;;
    esac
done
