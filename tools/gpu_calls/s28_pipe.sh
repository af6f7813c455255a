#!/bin/bash
# Session 28, seventh call, run at commit ca2714c (reverted since: the pipelined walk was slower; the script is kept
# as the record of what ran): the wgmma backward's walk pipelined one step deeper (wg_bwd_step_pipe, switch
# WGMMA_BACKWARD_PIPELINED, off; dZ in three buffers, the staged rows' stride K + 4 to fit).  Outputs:
# docs/bench/*_s28g_h100.txt.
#   tests      the MLP, level, guide-block and graph-step CUDA tests (both walks)
#   bench      tools/bench_kernels.py's MLP checks and timings (no model): both walks in one run
#   sanitize   memcheck and racecheck of the wgmma backward's tests (both walks; profiler-based ones left out)
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
        timeout 150 python -m pytest -q -p no:cacheprovider tests/cuda/test_mlp_bwd_wgmma.py tests/cuda/test_fused_mlp.py \
            tests/cuda/test_mlp_wgmma.py tests/cuda/test_guide_block.py tests/cuda/test_graph_step.py \
            tests/cuda/test_colour_level.py tests/cuda/test_front_level.py > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30 ;;
    bench)
        timeout 150 python tools/bench_kernels.py --no-model --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "fused fwd|eager f16|checks:" $OUT/bench.txt | head -30 ;;
    sanitize)
        sel="not 300007 and not 20011 and not switch and not level"
        timeout 100 compute-sanitizer --tool memcheck --leak-check no --print-limit 20 \
            python -m pytest -q -p no:cacheprovider tests/cuda/test_mlp_bwd_wgmma.py -k "$sel" > $OUT/sanitize.txt 2>&1
        tail -2 $OUT/sanitize.txt
        timeout 150 compute-sanitizer --tool racecheck --print-limit 20 \
            python -m pytest -q -p no:cacheprovider tests/cuda/test_mlp_bwd_wgmma.py \
            -k "(matches and pipelined and (129 or 65)) or (grouped and pipelined)" > $OUT/racecheck.txt 2>&1
        tail -2 $OUT/racecheck.txt ;;
    esac
done
