#!/bin/bash
# For session 28's first call (written in session 27 after its device time ran out; about 7 minutes, nothing to carry):
#   tests     every CUDA test: the columns up_block kernel bitwise against the reference; the front level with its MLP
#             on wgmma against float64 and mma.sync, and the switch's kernel choice; the guide's fused start and
#             finish bitwise against the reference, alone and inside the guide op
#   upblock   up_block at 24-MP Bayer size: the reference, the flat kernel (shipped) and the columns kernel, each
#             checked bitwise first (tools/kbench_timing.py up_block_timings)
#   time      24-MP model time with the front level's MLP on wgmma and on mma.sync; the pyramid fused and not; the
#             guide's first and last steps fused, each alone, and as the reference's passes (tools/time_model.py)
#   profile   per-kernel GPU time of the shipped Bayer model (tools/profile_inference.py: its profiler code now goes
#             through kbench_common.gpu_kernels, run on a GPU here for the first time)
#   sanitize  memcheck of the up_block, guide start / finish, pyramid and front-level wgmma tests
# Then: kpnt.ops._cuda.up_block.KERNEL = "columns" if it is faster; kpnt.ops._cuda.front_level.WGMMA_FORWARD = True
# if the front rows are faster; kpnt.ops.guide.FUSED_START and FUSED_FINISH = True if the fused ends are;
# kpnt.ops._cuda.pyramid.FUSED = True if the fused pyramid is; the README's check 4 from
# a rerun of `python tools/time_model.py --repeats 10`.
#   ncu       (not in the default list; a second call) Nsight Compute on the front level's MLP kernel at 24 MP (the
#             Bayer forward's mma.sync mlp_fwd_kernel: the colour MLPs run on wgmma): speed of light, occupancy,
#             memory and warp stalls, to say what bounds its 3.5 Gpix/s against 8.5 bare
#   final     (session 28's second call, after the switches were flipped) the defaults' model time for the README
# At most 8 files under $OUT.  PARTS (default "tests upblock time profile sanitize") to run fewer or add ncu.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
PARTS=${PARTS:-tests upblock time profile sanitize}
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
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt ;;
    upblock)
        (cd tools && PYTHONPATH=.. timeout 60 python -c "import kbench_timing as k; k.up_block_timings(20)") 2>&1 \
            | tee $OUT/up_block.txt ;;
    time)
        { timeout 120 python tools/time_model.py --repeats 10 --front-wgmma both
          timeout 120 python tools/time_model.py --repeats 10 --pyramid both
          timeout 180 python tools/time_model.py --repeats 10 --guide-ends each; } > $OUT/time_model.txt 2>&1
        grep -E " ms|x " $OUT/time_model.txt ;;
    final)
        timeout 120 python tools/time_model.py --repeats 10 > $OUT/time_final.txt 2>&1
        grep -E " ms|x " $OUT/time_final.txt ;;
    profile)
        timeout 60 python tools/profile_inference.py --top 16 --weights kpnt/weights/bayer.safetensors 2>&1 \
            | grep -v -i warn > $OUT/profile.txt
        cat $OUT/profile.txt ;;
    sanitize)
        timeout 180 compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
            python -m pytest -q -p no:cacheprovider tests/cuda/test_up_block.py tests/cuda/test_guide_finish.py \
            tests/cuda/test_guide_start.py tests/cuda/test_pyramid.py tests/cuda/test_mlp_wgmma.py \
            -k "up_block or guide_finish or (guide_start and not mean_factor) or (bitwise_the_reference and not 1001) or (front_level_on_wgmma and not 301)" \
            > $OUT/sanitize.txt 2>&1
        tail -3 $OUT/sanitize.txt ;;
    ncu)
        command -v ncu > /dev/null || { echo "no ncu on this machine"; continue; }
        timeout 300 ncu --kernel-name regex:mlp_fwd_kernel --launch-count 1 --section SpeedOfLight \
            --section Occupancy --section MemoryWorkloadAnalysis --section WarpStateStats \
            python tools/profile_inference.py --repeats 1 --top 3 --weights kpnt/weights/bayer.safetensors \
            > $OUT/ncu.txt 2>&1
        grep -iE "duration|throughput|occupancy|registers|hit rate|stall" $OUT/ncu.txt | head -40 ;;
    esac
done
