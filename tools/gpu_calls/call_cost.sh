#!/bin/bash
# Session 27, second machine: why a call of the wgmma MLP forward costs ~2 ms in bench_kernels' "fused fwd (wgmma)"
# row when its kernel takes ~0.42 ms (tools/mlp_call_cost.py: event, host and profiler time per call, both kernels),
# then one run of tools/bench_kernels.py with the model (the record for KERNELS.md, guide blocks on the pf2 kernel).
# Nothing to carry; at most 8 files under $OUT.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
PARTS=${PARTS:-cost bench}
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "import kpnt._backend as b; b.load()"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    cost)
        timeout 120 python tools/mlp_call_cost.py 2>&1 | grep -v -i warn | tee $OUT/call_cost.txt ;;
    bench)
        timeout ${BENCH_TIMEOUT:-330} python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 \
            > $OUT/bench.txt 2>&1
        grep -E "FAIL|^[a-z].*(ms|x)\b" $OUT/bench.txt | grep -v check | tail -60 ;;
    esac
done
