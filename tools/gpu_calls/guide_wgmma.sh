#!/bin/bash
# Session 25: the guide block's wgmma kernel inside kpnt (kernels/guide_block_wgmma.cuh, built as sm_90a), in one
# call sized to what is left of a session's device time: the build's arch, the CUDA tests (every guide-block kernel
# against cuDNN and float64, the whole guide and the shipped models), the shipped models' 24-MP time with the blocks
# fused and on cuDNN, compute-sanitizer memcheck of bench_kernels' sanitize case, then shipped-Bayer training-parity
# seeds until LIMIT seconds (default 540) are nearly spent.  Nothing to carry.
# Part "probe" (not in the default list, about a minute) reruns tools/projblock_probe with session 25's candidates
# with the candidates of the day (session 26: two prefetching halves a block).
#   PARTS (default "tests time sanitize parity") to run fewer or add "probe"; TESTS (default tests/cuda) the tests to run;
#   WEIGHTS (default both shipped models) the models to time; FIRST_SEED (default 12) the first parity seed.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
LIMIT=${LIMIT:-540}
PARTS=${PARTS:-tests time sanitize parity}
nvidia-smi -L
git log -1 --format='commit %h %s' 2>/dev/null | cut -c1-100
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "
import time, torch, kpnt._backend as b
t = time.time(); b.load(); print('kernels built in %.1f s, arch %s' % (time.time() - t, b.build_flags()['arch']))
from kpnt.ops._cuda.guide_block import wgmma_built; print('wgmma kernel built:', wgmma_built(0))"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 150 python -m pytest -q -p no:cacheprovider ${TESTS:-tests/cuda} > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt ;;
    time)
        timeout 120 python tools/time_model.py --repeats 5 --guide-block both ${WEIGHTS:+--weights $WEIGHTS} \
            > $OUT/time_model.txt 2>&1
        grep -E " ms|x " $OUT/time_model.txt ;;
    probe)
        timeout 120 bash tools/gpu_calls/projblock_probe.sh > $OUT/probe.log 2>&1
        tail -22 $OUT/probe.log ;;
    sanitize)
        timeout 120 compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
            python tools/bench_kernels.py --sanitize > $OUT/sanitize.txt 2>&1
        tail -2 $OUT/sanitize.txt ;;
    parity)
        echo "($((LIMIT - SECONDS - 10)) s left)"
        timeout $((LIMIT - SECONDS - 10)) python tools/bench_kernels.py --no-compile --parity-only \
            --parity-archs shipped:bayer --parity-seeds 20 --parity-first-seed ${FIRST_SEED:-12} > $OUT/parity.txt 2>&1
        grep -c "parity shipped" $OUT/parity.txt
        grep -E "^parity|check" $OUT/parity.txt ;;
    esac
done
