#!/bin/bash
# Session 27, last call: the CUDA tests with the wgmma MLP forward on by default (WGMMA_FORWARD = True) and the kept
# extension, then the shipped models' 24-MP time as kpnt ships (README check 4).  Nothing to carry.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python -c "import kpnt._backend as b; b.load()"
echo "=== tests"
timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt
echo "=== time"
timeout 200 python tools/time_model.py --repeats 10 > $OUT/time_model.txt 2>&1
grep -E " ms|x " $OUT/time_model.txt
