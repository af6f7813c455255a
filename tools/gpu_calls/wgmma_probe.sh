#!/bin/bash
# Session 22 (written without a GPU): does wgmma pay for kpnt's width-64 MLPs? Builds tools/wgmma_probe/wgmma_probe.cu
# for sm_90a with kernels/mlp.cu (the production mma.sync forward it times alongside) and runs it: a layout check of
# one wgmma for both readings of the shared-memory descriptor's byte offsets, then the colour and front MLPs, each
# checked against a host float64 MLP that rounds like the kernels and timed beside kernels/mlp_core.cuh's forward.
#   ROWS (default 4194304) rows per timed call, REPS (default 20) timed calls (median).
# Output: $OUT/wgmma_probe.txt. About a minute (14 s of it the build).
set -o pipefail
nvidia-smi -L
nvcc -gencode arch=compute_90a,code=sm_90a -O3 -std=c++17 -I kernels -Xptxas -v \
    tools/wgmma_probe/wgmma_probe.cu kernels/mlp.cu -o /tmp/wgmma_probe 2> $OUT/wgmma_probe_build.txt \
    || { tail -20 $OUT/wgmma_probe_build.txt; exit 2; }
grep -iE "warn|spill stores [1-9]" $OUT/wgmma_probe_build.txt | head
/tmp/wgmma_probe ${ROWS:-4194304} ${REPS:-20} | tee $OUT/wgmma_probe.txt
