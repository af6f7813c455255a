#!/bin/bash
# Session 26 (for session 27's first call): the MLP forward on wgmma (kernels/mlp_wgmma.cuh; kpnt.ops._cuda.mlp.WGMMA_FORWARD, off until this
# passes) and the launchers' cached driver queries (kernels/mlp_core.cuh), both written without a GPU.  One call,
# about 4 minutes, nothing to carry:
#   tests     every CUDA test (the wgmma forward against float64 and mma.sync, plain, grouped, the colour level)
#   sanitize  compute-sanitizer memcheck of the wgmma tests
#   bench     bench_kernels' MLP checks and timings (timing rows "(wgmma)" beside mma.sync), no model, no parity
#   time      24-MP model time with the colour MLPs on wgmma and on mma.sync (guide blocks fused)
#   probe     tools/wgmma_probe (about a minute): kpnt's wgmma forward through its own launcher beside mma.sync
#             and the probe's variants, all checked against float64, at 4 M rows
#   profile   GPU kernel time per kernel of the shipped models' 24-MP forward (tools/profile_inference.py, the guide's
#             blocks fused): what the Bayer model's 40 ms are made of now, for point 5
#   blockprobe  tools/projblock_probe (about a minute): the guide block's kernels and session 26's candidate (two
#             prefetching 8 x 16 halves a block), each checked against float64, timed beside cuDNN's block
#   parity    (not in the default list) shipped-architecture training-parity seeds until LIMIT seconds (default
#             540) are nearly spent: PARITY_ARCH (default shipped:xtrans, 8 pairs so far) from FIRST_SEED (default 8)
# PARTS (default "tests probe time profile blockprobe bench sanitize", most needed first) to run fewer; the part timeouts are upper bounds (the
# session-26 guide-block call ran build, tests, time and sanitize in about 3 minutes).
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
PARTS=${PARTS:-tests probe time profile blockprobe bench sanitize}
LIMIT=${LIMIT:-540}
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "
import time, kpnt._backend as b
t = time.time(); b.load(); print('kernels built in %.1f s, arch %s' % (time.time() - t, b.build_flags()['arch']))
from kpnt.ops._cuda.guide_block import wgmma_built; print('wgmma kernels built:', wgmma_built(0))"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 150 python -m pytest -q -p no:cacheprovider ${TESTS:-tests/cuda} > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt ;;
    sanitize)
        timeout 120 compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
            python -m pytest -q -p no:cacheprovider tests/cuda/test_mlp_wgmma.py -k "not 300007 and not 301" \
            > $OUT/sanitize.txt 2>&1
        tail -3 $OUT/sanitize.txt ;;
    bench)
        timeout 150 python tools/bench_kernels.py --no-compile --no-model --parity-steps 0 --reps 10 \
            > $OUT/bench.txt 2>&1
        grep -E "fused fwd|check|FAIL" $OUT/bench.txt | head -40 ;;
    time)
        timeout 120 python tools/time_model.py --repeats 5 --mlp-wgmma both > $OUT/time_model.txt 2>&1
        grep -E " ms|x " $OUT/time_model.txt ;;
    probe)
        timeout 120 bash tools/gpu_calls/wgmma_probe.sh > $OUT/probe.log 2>&1
        tail -14 $OUT/probe.log ;;
    blockprobe)
        timeout 120 bash tools/gpu_calls/projblock_probe.sh > $OUT/blockprobe.log 2>&1
        tail -16 $OUT/blockprobe.log ;;
    profile)
        timeout 90 python tools/profile_inference.py --top 30 > $OUT/profile.txt 2>&1
        head -32 $OUT/profile.txt ;;
    parity)
        echo "($((LIMIT - SECONDS - 10)) s left)"
        timeout $((LIMIT - SECONDS - 10)) python tools/bench_kernels.py --no-compile --parity-only \
            --parity-archs ${PARITY_ARCH:-shipped:xtrans} --parity-seeds 30 --parity-first-seed ${FIRST_SEED:-8} \
            > $OUT/parity.txt 2>&1
        grep -c "parity shipped" $OUT/parity.txt
        grep -E "^parity|check" $OUT/parity.txt ;;
    esac
done
