#!/bin/bash
# Session 28, fifth call: the wgmma backward on by default (kpnt.ops._cuda.mlp.WGMMA_BACKWARD) for the bare MLP
# and the 64-wide colour and front levels (the default architecture's training).  About 8 minutes, nothing to carry.
#   tests     every CUDA test (the levels' and the graphed step's now train on the wgmma backward)
#   bench     tools/bench_kernels.py, whole: the checks against float64 (point 1), the MLP rows (point 3) and the
#             graphed training steps of the default and the shipped architecture (point 2)
#   sanitize  memcheck of the wgmma backward's tests (the profiler-based ones left out: CUPTI under the sanitizer)
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
PARTS=${PARTS:-tests bench sanitize}
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "
import time, kpnt._backend as b
t = time.time(); b.load(); print('kernels built in %.1f s, arch %s' % (time.time() - t, b.build_flags()['arch']))"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30 ;;
    bench)
        timeout 330 python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "wgmma fwd\+bwd|fused fwd\+bwd \(dW\) |graphed|ratios|FAIL|checks passed|check.*fail" $OUT/bench.txt | head -40 ;;
    sanitize)
        timeout 120 compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
            python -m pytest -q -p no:cacheprovider tests/cuda/test_mlp_bwd_wgmma.py \
            -k "not 300007 and not 20011 and not switch and not level" > $OUT/sanitize.txt 2>&1
        tail -2 $OUT/sanitize.txt ;;
    esac
done
