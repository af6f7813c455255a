#!/bin/bash
# Session 29, call 2: the split backward's workspace in the core-matrix layout and its dW pass on wgmma
# (kernels/mlp_dw_wgmma.cuh), first run.  About 5 minutes, nothing to carry.
#   tests     every CUDA test (new: tests/cuda/test_mlp_dw_wgmma.py, both dW passes against the references)
#   memcheck  compute-sanitizer memcheck and racecheck of the new tests (small row counts)
#   prof      tools/mlp_bwd_breakdown.py --widths 128: the data pass and the dW pass
#   bench     tools/bench_kernels.py --no-model: point 3's rows, the mma.sync backward beside the wgmma one
PARTS=${PARTS:-tests memcheck prof bench}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30
        grep -E "^E  " $OUT/tests.txt | head -20 ;;
    memcheck)
        timeout 150 compute-sanitizer --tool memcheck --leak-check no python -m pytest -q -p no:cacheprovider \
            tests/cuda/test_mlp_dw_wgmma.py -k "not switch and not level and not 300007" > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|passed|failed" $OUT/memcheck.txt | tail -3
        timeout 100 compute-sanitizer --tool racecheck python -m pytest -q -p no:cacheprovider \
            tests/cuda/test_mlp_dw_wgmma.py -k "matches and 129" > $OUT/racecheck.txt 2>&1
        grep -E "ERROR SUMMARY|RACECHECK SUMMARY|hazard|passed|failed" $OUT/racecheck.txt | tail -4 ;;
    prof)
        timeout 100 python tools/mlp_bwd_breakdown.py --widths 128 > $OUT/prof.txt 2>&1
        cat $OUT/prof.txt | grep -v Warn | head -20 ;;
    bench)
        timeout 150 python tools/bench_kernels.py --no-model --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "fused fwd|eager f16|checks:|FAIL" $OUT/bench.txt | head -40
        grep -A8 "issue 14's targets" $OUT/bench.txt ;;
    esac
done
