#!/bin/bash
# Session 27: the fused up_block (kernels/up_block.cu, written after the session's other calls): the CUDA tests
# (bitwise against the reference; the shipped models fused against the reference), the shipped models' 24-MP time
# as kpnt ships, and the per-kernel profile (Bayer: 19 gathers, 1.97 ms, before).  Nothing to carry.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "import kpnt._backend as b; b.load()"
echo "=== tests"
timeout 90 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt
echo "=== time"
timeout 70 python tools/time_model.py --repeats 10 > $OUT/time_model.txt 2>&1
grep -E " ms|x " $OUT/time_model.txt
echo "=== profile"
timeout 40 python tools/profile_inference.py --top 14 --weights kpnt/weights/bayer.safetensors 2>&1 | grep -v -i warn \
    > $OUT/profile.txt
cat $OUT/profile.txt
