#!/bin/bash
# Session 27: the guide block on projblock_wgmma_pf2_kernel (two prefetching 8 x 16 halves a block; the probe
# measured 1.184 ms a block against the 16 x 16 prefetching kernel's 1.288 in session 27's first call) inside kpnt,
# and why the wgmma MLP forward, faster alone (probe: 10.0 against 7.4 Gpix/s on the colour shape) and in GPU kernel
# time (1.28 against 1.97 ms of the Bayer forward), made the 24-MP forward slower (42.2 against 40.0 ms).
# One call, about 4 minutes, nothing to carry.  At most 8 files under $OUT (more do not come back).
#   tests     every CUDA test (the guide block against cuDNN and float64 at six sizes, the shipped models)
#   time      24-MP model time: guide blocks fused and on cuDNN, MLP forward on wgmma and on mma.sync
#   profile   per-kernel GPU time of the shipped models with the MLP forward on mma.sync and on wgmma, each beside
#             its unprofiled CUDA-event time and the host's launch time (tools/profile_inference.py)
#   sanitize  compute-sanitizer memcheck of bench_kernels' sanitize case, then racecheck and synccheck of the
#             guide block's wgmma kernel (the halves' buffers and named barriers)
# PARTS (default "tests time profile sanitize") to run fewer.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
PARTS=${PARTS:-tests time profile sanitize}
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
        timeout 200 python -m pytest -q -p no:cacheprovider ${TESTS:-tests/cuda} > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt ;;
    time)
        timeout 200 python tools/time_model.py --repeats 5 --guide-block both --mlp-wgmma both > $OUT/time_model.txt 2>&1
        grep -E " ms|x " $OUT/time_model.txt ;;
    profile)
        for w in off on; do
            timeout 60 python tools/profile_inference.py --top 8 --mlp-wgmma $w 2>&1 | grep -v -i warn
        done > $OUT/profile.txt
        cat $OUT/profile.txt ;;
    sanitize)
        timeout 120 compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
            python tools/bench_kernels.py --sanitize > $OUT/sanitize.txt 2>&1
        tail -2 $OUT/sanitize.txt
        for tool in racecheck synccheck; do
            timeout 90 compute-sanitizer --tool $tool --print-limit 20 python -c "
import torch
from kpnt.ops._cuda.guide_block import fused_proj_block
z = torch.rand(2, 64, 37, 53, device='cuda').half().contiguous(memory_format=torch.channels_last)
w, b = torch.randn(64, 64, 3, 3, device='cuda').half() * 0.06, torch.randn(64, device='cuda') * 0.1
p, c = torch.randn(64, 64, 1, 1, device='cuda').half() * 0.12, torch.randn(64, device='cuda') * 0.1
with torch.no_grad():
    fused_proj_block(z, w, b, p, c, 'wgmma')
torch.cuda.synchronize(); print('$tool case done')" >> $OUT/sanitize.txt 2>&1
            tail -2 $OUT/sanitize.txt
        done ;;
    esac
done
