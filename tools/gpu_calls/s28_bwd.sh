#!/bin/bash
# Session 28, third call: the MLP backward on wgmma (kernels/mlp_bwd_wgmma.cuh), written this session and not yet
# run.  About 5 minutes, nothing to carry.  Call 3 ran every part (commit 4ecba8c: the swap part
# found reading 0 right, bit for bit mma.sync's gradients, and 1 faulting); call 4 (PARTS="tests bench sanitize")
# the kernel with that reading fixed and dW overlapping the walk.  The profiler-based switch test is left out of
# the sanitizer run: CUPTI sees no kernels under compute-sanitizer.
#   swap     which reading of the MN-major descriptors is right (KPNT_WGMMA_MN_SWAP 0 / 1): one backward each,
#            against mma.sync's; the parts below run with the one that matches
#   tests    tests/cuda/test_mlp_bwd_wgmma.py, then the whole CUDA suite's MLP tests
#   bench    tools/bench_kernels.py's MLP checks and timings (no model): point 3's rows, the wgmma backward beside
#            mma.sync's, eager PyTorch
#   final    the shipped defaults' 24-MP model time (the columns up_block now ships) for the README
#   sanitize memcheck of the wgmma backward's tests
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
PARTS=${PARTS:-swap tests bench final sanitize}
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "
import time, kpnt._backend as b
t = time.time(); b.load(); print('kernels built in %.1f s, arch %s' % (time.time() - t, b.build_flags()['arch']))"
export KPNT_WGMMA_MN_SWAP=0
for part in $PARTS; do
    echo "=== $part"
    case $part in
    swap)
        timeout 60 python - <<'PY' 2>&1 | tee $OUT/swap.txt
import os, sys, torch
sys.path.insert(0, "tests/cuda")
from test_fused_mlp import SLOPE, features, weights
from kpnt.ops import _cuda
from kpnt.ops._cuda import mlp as mlp_op
from kpnt.testing import rel_error as rel
best = None
for dims in ([32, 64, 16, 6], [32, 64, 32, 4]):
    ws = weights(dims, seed=3)
    x = features(5_003, dims[0], seed=4).requires_grad_()
    gy = torch.randn(5_003, dims[2], device="cuda")
    def grads(on):
        mlp_op.WGMMA_BACKWARD = on
        return torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), [x, *ws], gy)
    ref = grads(False)
    for swap in ("0", "1"):
        os.environ["KPNT_WGMMA_MN_SWAP"] = swap
        try:
            errs = [rel(a, b) for a, b in zip(grads(True), ref)]
            torch.cuda.synchronize()
        except Exception as e:
            print(dims, "swap", swap, "error:", e); continue
        print(dims, "swap", swap, "rel error against mma.sync (dx, dW...):", " ".join(f"{e:.2e}" for e in errs))
        if max(errs) < 1e-2 and dims[2] == 16:
            best = swap
print("RIGHT_SWAP", best)
PY
        s=$(grep RIGHT_SWAP $OUT/swap.txt | awk '{print $2}')
        [ "$s" = "0" ] || [ "$s" = "1" ] && export KPNT_WGMMA_MN_SWAP=$s
        echo "running the rest with KPNT_WGMMA_MN_SWAP=$KPNT_WGMMA_MN_SWAP" ;;
    tests)
        timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda/test_mlp_bwd_wgmma.py tests/cuda/test_fused_mlp.py \
            tests/cuda/test_mlp_wgmma.py > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30 ;;
    bench)
        timeout 200 python tools/bench_kernels.py --no-model --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "fused fwd|eager|compile|FAIL|checks" $OUT/bench.txt | head -40 ;;
    final)
        timeout 90 python tools/time_model.py --repeats 10 > $OUT/time_final.txt 2>&1
        grep -E " ms|x " $OUT/time_final.txt ;;
    sanitize)
        timeout 150 compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
            python -m pytest -q -p no:cacheprovider tests/cuda/test_mlp_bwd_wgmma.py -k "not 300007 and not 20011 and not switch" \
            > $OUT/sanitize.txt 2>&1
        tail -3 $OUT/sanitize.txt ;;
    esac
done
