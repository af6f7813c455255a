#!/bin/bash
# Session 29, call 5: the 128-wide MLP forward on wgmma (plain, the colour and front levels, and the storing
# training forward), first run.  About 6 minutes, nothing to carry.
#   tests     every CUDA test (new in tests/cuda/test_mlp_dw_wgmma.py: the forward at width 128 on wgmma against
#             mma.sync and the f16 reference; the storing forward on wgmma)
#   memcheck  compute-sanitizer memcheck of the storing forward on wgmma and its backward, and the plain forward
#   prof      tools/mlp_bwd_breakdown.py --widths 128
#   bench     tools/bench_kernels.py --no-model: point 3's rows, mma.sync forward rows beside
#   model     the shipped models at 24 MP, kpnt.ops._cuda.mlp.WGMMA_FORWARD_128 on and off in turn (point 5)
PARTS=${PARTS:-tests memcheck prof bench model}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30
        grep -E "^E  " $OUT/tests.txt | head -20 ;;
    memcheck)
        cat > /tmp/fwd_run.py <<'PY'
import sys, torch
sys.path.insert(0, "tests/cuda")
from test_fused_mlp import SLOPE, features, weights
from kpnt.ops import _cuda
for dims in ([32, 128, 16, 6], [32, 128, 80, 4]):
    for P in (1, 129, 20_011):
        ws = weights(dims, seed=P)
        x = features(P, dims[0], seed=P + 1).requires_grad_()
        g = torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), [x, *ws], torch.randn(P, dims[2], device="cuda"))
        with torch.no_grad():
            _cuda.fused_mlp(x, ws, SLOPE)
    wg = weights(dims, groups=4, seed=3)
    cls = torch.randint(0, 3, (9_001,), device="cuda")
    g = torch.autograd.grad(_cuda.fused_mlp_grouped(features(9_001, dims[0]), cls, wg, SLOPE), wg,
                            torch.randn(9_001, dims[2], device="cuda"))
torch.cuda.synchronize()
print("forward run done")
PY
        PYTHONPATH=$PWD timeout 150 compute-sanitizer --tool memcheck --leak-check no python /tmp/fwd_run.py > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|done" $OUT/memcheck.txt | tail -3 ;;
    prof)
        timeout 100 python tools/mlp_bwd_breakdown.py --widths 128 > $OUT/prof.txt 2>&1
        grep -v -i warn $OUT/prof.txt | head -20 ;;
    bench)
        timeout 150 python tools/bench_kernels.py --no-model --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "fused fwd|checks:|FAIL" $OUT/bench.txt | head -40
        grep -A8 "issue 14's targets" $OUT/bench.txt ;;
    model)
        PYTHONPATH=$PWD:$PWD/tools timeout 200 python - > $OUT/model.txt 2>&1 <<'PY'
import time_model as tm
from kpnt.ops._cuda import mlp as mlp_op
for path in [tm.shipped_weights(s) for s in tm.MOSAIC_KINDS]:
    sensor, cfa, x, noise = tm.synthetic_input(path, 4002, 6006)
    model, _ = tm.load_weights(path, sensor, device="cuda")
    model.backend = "auto"
    for on in (True, False, True, False):
        mlp_op.WGMMA_FORWARD_128 = on
        print(f"{path.name}: {sensor} 4002x6006, 128-wide MLP forwards on {'wgmma' if on else 'mma.sync'}: "
              f"{tm.time_ms(model, x, cfa, noise, 5):.1f} ms", flush=True)
PY
        cat $OUT/model.txt | tail -10 ;;
    esac
done
