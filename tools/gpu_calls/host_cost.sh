#!/bin/bash
# Session 27, third machine: after kpnt.ops._cuda.extension.ext() keeps the loaded module (it re-hashed every
# kernel source on each op call, ~0.6 ms of host time a call), the CUDA tests, a fused MLP call's cost
# (tools/mlp_call_cost.py), the 24-MP model time (MLP forward on wgmma and on mma.sync), the per-kernel profile with
# the host's launch time, and one run of tools/bench_kernels.py with the model (the record for docs/KERNELS.md).
# Nothing to carry; at most 8 files under $OUT.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
PARTS=${PARTS:-tests cost time profile bench}
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "import kpnt._backend as b; b.load()"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt ;;
    cost)
        timeout 100 python tools/mlp_call_cost.py 2>&1 | grep -v -i warn | tee $OUT/call_cost.txt ;;
    time)
        timeout 150 python tools/time_model.py --repeats 10 --mlp-wgmma both > $OUT/time_model.txt 2>&1
        grep -E " ms|x " $OUT/time_model.txt ;;
    profile)
        for w in off on; do
            timeout 60 python tools/profile_inference.py --top 6 --mlp-wgmma $w 2>&1 | grep -v -i warn
        done > $OUT/profile.txt
        grep "GPU kernel time" $OUT/profile.txt ;;
    bench)
        timeout ${BENCH_TIMEOUT:-200} python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 \
            > $OUT/bench.txt 2>&1
        grep -E "FAIL|^(fused|train step|inference|bayer|xtrans)" $OUT/bench.txt | grep -vE "eager|check" | tail -45 ;;
    esac
done
