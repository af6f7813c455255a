#!/bin/bash
# Everything issue 14 asks a GPU call to show, in one call (about 8 minutes on an H100; written in session 23,
# the fused guide block added in session 24): the CUDA tests, the projection-block probe, the shipped models'
# 24-MP model time with the guide's blocks fused and on cuDNN, compute-sanitizer memcheck, and
# tools/bench_kernels.py's checks and timings (MLPs, levels, graphed steps of the default and shipped
# architectures, 24-MP inference).  Each part writes to $OUT and has its own time limit, so one slow part cannot
# take the others' results with it; the most wanted come first.  Nothing to carry.
#   PARTS (default "tests probe time sanitize bench") to run fewer.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
PARTS=${PARTS:-tests probe time sanitize bench}
nvidia-smi -L
git log -1 --format='commit %h %s' 2>/dev/null | cut -c1-100
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "import time, kpnt._backend as b; t = time.time(); b.load(); print('kernels built in %.1f s' % (time.time() - t))"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|passed|failed" $OUT/tests.txt ;;
    sanitize)
        timeout 150 compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
            python tools/bench_kernels.py --sanitize > $OUT/sanitize.txt 2>&1
        tail -2 $OUT/sanitize.txt ;;
    bench)
        timeout 200 python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 10 --json $OUT/bench.json \
            > $OUT/bench.txt 2>&1
        grep -E "FAIL|checks (passed|failed)" $OUT/bench.txt | head -5
        sed -n '/== MLP timings/,$p' $OUT/bench.txt | head -80 ;;
    time)
        timeout 150 python tools/time_model.py --repeats 5 --guide-block both > $OUT/time_model.txt 2>&1
        grep -E "ms|x " $OUT/time_model.txt ;;
    probe)
        timeout 120 bash tools/gpu_calls/projblock_probe.sh > $OUT/probe.log 2>&1
        tail -20 $OUT/probe.log ;;
    esac
done
ls -la $OUT
