#!/bin/bash
# For session 29's first call (written in session 28 after its device time ran out; about 6 minutes, nothing to carry).
# Session 28's last commits changed host code only (kernels/bindings.cpp: x and dL/dy views that break 16-byte
# alignment are copied; the wgmma query refuses inside graph capture; kernels/mlp_bwd_wgmma.cuh's launch check;
# kernels/front_level.cu's grid for the per-channel policy) and added CUDA tests that have not run yet.
#   tests     every CUDA test (new: misaligned views, an empty group beside many tiles, the colour level over more
#             tiles than blocks)
#   ncu       Nsight Compute on the wgmma backward at 4 M rows (the bare colour MLP): where a tile's ~7 us go
#             (warp stalls: barrier, wgmma wait, long scoreboard), to choose the next lever for point 3's last 5 %
#   ncu128    the same for the width-128 split backward's two kernels (data pass, dW pass): DRAM against tensor pipe
#   prof      tools/mlp_bwd_breakdown.py: the kernels of one forward+backward at widths 64 and 128, with their share
#   bench     tools/bench_kernels.py --no-model: point 3's rows
# At most 8 files under $OUT.  PARTS (default "tests ncu ncu128 prof bench") to run fewer.
PARTS=${PARTS:-tests ncu ncu128 prof bench}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30 ;;
    ncu)
        command -v ncu > /dev/null || { echo "no ncu on this machine"; continue; }
        timeout 200 ncu --kernel-name regex:mlp_bwd_wgmma_kernel --launch-count 1 --section SpeedOfLight \
            --section Occupancy --section WarpStateStats --section SchedulerStats python - > $OUT/ncu.txt 2>&1 <<'PY'
import torch, sys
sys.path.insert(0, "tests/cuda")
from test_fused_mlp import SLOPE, features, weights
from kpnt.ops import _cuda
ws = weights([32, 64, 16, 6], seed=1)
x = features(1 << 22, 32, seed=2)
gy = torch.randn(1 << 22, 16, device="cuda")
torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), ws, gy)
torch.cuda.synchronize()
PY
        grep -iE "duration|throughput|stall|warp cycles|issued|eligible" $OUT/ncu.txt | head -40 ;;
    ncu128)
        command -v ncu > /dev/null || { echo "no ncu on this machine"; continue; }
        timeout 200 ncu --kernel-name regex:"mlp_bwd_split_kernel|mlp_dw_kernel" --launch-count 2 --section SpeedOfLight \
            --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis \
            python - > $OUT/ncu128.txt 2>&1 <<'PY'
import torch, sys
sys.path.insert(0, "tests/cuda")
from test_fused_mlp import SLOPE, features, weights
from kpnt.ops import _cuda
ws = weights([32, 128, 16, 6], seed=1)
x = features(1 << 22, 32, seed=2)
gy = torch.randn(1 << 22, 16, device="cuda")
torch.autograd.grad(_cuda.fused_mlp(x, ws, SLOPE), ws, gy)
torch.cuda.synchronize()
PY
        grep -iE "mlp_|duration|throughput|stall|pipe|issued|eligible" $OUT/ncu128.txt | head -50 ;;
    prof)
        timeout 120 python tools/mlp_bwd_breakdown.py > $OUT/prof.txt 2>&1
        cat $OUT/prof.txt | head -40 ;;
    bench)
        timeout 150 python tools/bench_kernels.py --no-model --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "fused fwd|eager f16|checks:" $OUT/bench.txt | head -30
        grep -A8 "issue 14's targets" $OUT/bench.txt ;;
    esac
done
