#!/bin/bash
# Session 30, call 4: the acceptance run after calls 1-3's kernel changes, and whether those changes left every
# result bit for bit as it was.  About 7 minutes.  Carries .gpu30/base_kernels (dd1dbcc's, before this session's
# changes) for the identity check.
#   bench     tools/bench_kernels.py in full (MLP rows and checks, the models, the training steps: point 2's table)
#   identity  y, dL/dx and every dL/dW of the bare op (widths 64 and 128, plain and grouped, 100 003 rows) on the
#             working tree's kernels and on dd1dbcc's: bitwise equal or not
PARTS=${PARTS:-bench identity}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    bench)
        timeout 360 python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "checks:|FAIL|ratios" $OUT/bench.txt | head -20
        grep -A10 "issue 14's targets" $OUT/bench.txt ;;
    identity)
        KPNT_KERNELS_DIR=$PWD/.gpu30/base_kernels KPNT_CACHE_DIR=/tmp/kc_base python -c "
import time, kpnt._backend as b; t = time.time(); b.load(); print('base built in %.1f s' % (time.time() - t))"
        cat > /tmp/identity.py <<'PY'
import sys, torch
sys.path.insert(0, "tests/cuda")
from test_fused_mlp import SLOPE, features, weights
from kpnt.ops import _cuda
out = {}
for dims in ([32, 64, 16, 6], [32, 64, 32, 4], [32, 128, 16, 6], [32, 128, 80, 4]):
    P = 100_003
    ws = weights(dims, seed=5)
    x = features(P, dims[0], seed=6).requires_grad_()
    y = _cuda.fused_mlp(x, ws, SLOPE)
    g = torch.autograd.grad(y, [x, *ws], torch.randn(P, dims[2], device="cuda", generator=torch.Generator("cuda").manual_seed(7)))
    out[f"{dims} plain"] = [y.detach(), *g]
    wg = weights(dims, groups=4, seed=3)
    cls = torch.randint(0, 3, (P,), device="cuda", generator=torch.Generator("cuda").manual_seed(8))
    xg = features(P, dims[0], seed=9)
    yg = _cuda.fused_mlp_grouped(xg, cls, wg, SLOPE)
    gg = torch.autograd.grad(yg, wg, torch.randn(P, dims[2], device="cuda", generator=torch.Generator("cuda").manual_seed(10)))
    out[f"{dims} grouped"] = [yg.detach(), *gg]
torch.save({k: [t.cpu() for t in v] for k, v in out.items()}, sys.argv[1])
print("saved", len(out), "cases to", sys.argv[1])
PY
        PYTHONPATH=$PWD python /tmp/identity.py /tmp/id_new.pt
        KPNT_KERNELS_DIR=$PWD/.gpu30/base_kernels KPNT_CACHE_DIR=/tmp/kc_base PYTHONPATH=$PWD python /tmp/identity.py /tmp/id_base.pt
        python - > $OUT/identity.txt <<'PY'
import torch
a, b = torch.load("/tmp/id_new.pt"), torch.load("/tmp/id_base.pt")
for k in a:
    same = [torch.equal(u, v) for u, v in zip(a[k], b[k])]
    diff = max(float((u - v).abs().max()) for u, v in zip(a[k], b[k]))
    print(f"{k:28s} tensors {len(same)}, bitwise equal {sum(same)}, max abs diff {diff:.3e}")
PY
        cat $OUT/identity.txt ;;
    esac
done
