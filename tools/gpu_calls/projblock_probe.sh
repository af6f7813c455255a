#!/bin/bash
# Session 23 (written without a GPU): is a fused projection block (3x3 + bias + ReLU, then the 1x1, bias, skip add
# and ReLU, h never leaving the chip) faster than cuDNN for the shipped Bayer guide at 24 MP?  Times kpnt's cuDNN
# block (tools/projblock_probe/cudnn_block.py), builds tools/projblock_probe/projblock_probe.cu and runs it with
# that time as its baseline: checks against a host double-precision block on a 3x37x133 image (2x37x133 before session 26), then the time a
# block at 1 x 2001 x 3003 x 64 of each kernel that passed.  About a minute; output $OUT/projblock_probe.txt.
#   REPS (default 20) timed launches (median).
set -o pipefail
export PYTHONUNBUFFERED=1
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation > /dev/null 2>&1
python tools/projblock_probe/cudnn_block.py --reps ${REPS:-20} | tee $OUT/cudnn_block.txt
BASE=$(tail -1 $OUT/cudnn_block.txt)
nvcc -gencode arch=compute_90a,code=sm_90a -O3 -std=c++17 -I kernels -Xptxas -v \
    tools/projblock_probe/projblock_probe.cu kernels/mlp.cu -o /tmp/projblock_probe 2> $OUT/projblock_probe_build.txt \
    || { tail -20 $OUT/projblock_probe_build.txt; exit 2; }
grep -iE "warn|spill stores [1-9]" $OUT/projblock_probe_build.txt | head
/tmp/projblock_probe ${REPS:-20} ${BASE:-0} | tee $OUT/projblock_probe.txt
