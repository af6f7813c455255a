#!/bin/bash
# Session 22 (written without a GPU): check this tree's kernels and time them against an earlier commit's, in one call.
# The change under test: fast division for the row decode, the front level's taps read without bounds checks on rows
# away from the edges, the leaky ReLU on packed f16 pairs, one division a row in plain normalisation
# (docs/KERNELS.md, "Session 22").
#   BEFORE   folder holding the earlier kernels/ (git-ignored: carry it). Made on the CPU machine with
#            B=ebf51d6; mkdir -p .gpu6/kernels_before && for f in $(git ls-tree --name-only $B kernels/); do
#            git show $B:$f > .gpu6/kernels_before/$(basename $f); done
#   TESTS=0     skip the CUDA tests of this tree's kernels (tests/cuda, about 2-3 min)
#   SANITIZE=1  also compute-sanitizer memcheck over small launches of every kernel (tools/bench_kernels.py --sanitize)
#   BENCH=1     also tools/bench_kernels.py's MLP, level and step timings for each build (long: a call of its own)
# Carry .gpu6/kernels_before. Outputs in $OUT: build.txt, tests.txt, sanitize.txt, ab.txt (24-MP model time and the
# per-kernel profile of each build, twice, alternating, so drift between the runs shows), bench-{before,after}.txt.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
BEFORE=${BEFORE:-.gpu6/kernels_before}
[ -f "$BEFORE/front_level.cu" ] || { echo "no earlier kernels in $BEFORE (see the header)"; exit 2; }
pip install -q -e . --no-deps --no-build-isolation 2>&1 | tail -2
nvidia-smi -L
side_env() {  # the environment of one build: its sources and its own build cache
    if [ "$1" = before ]; then echo "KPNT_KERNELS_DIR=$PWD/$BEFORE KPNT_CACHE_DIR=$PWD/.gpu6/cache-before"
    else echo "KPNT_KERNELS_DIR=$PWD/kernels KPNT_CACHE_DIR=$PWD/.gpu6/cache-after"; fi
}
for side in before after; do
    env $(side_env $side) KPNT_BUILD_VERBOSE=1 python -c "
import time, kpnt._backend as b
t = time.time(); b.load(); print('$side: built in %.1f s' % (time.time() - t))" > $OUT/build-$side.txt 2>&1
    grep -E "built in|error|spill" $OUT/build-$side.txt | grep -v " 0 bytes spill" | head -20
done
if [ "${TESTS:-1}" = 1 ]; then
    env $(side_env after) python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
    tail -15 $OUT/tests.txt
fi
if [ "${SANITIZE:-0}" = 1 ]; then
    env $(side_env after) compute-sanitizer --tool memcheck --print-limit 20 python tools/bench_kernels.py --sanitize \
        > $OUT/sanitize.txt 2>&1
    tail -5 $OUT/sanitize.txt
fi
for round in 1 2; do
    for side in before after; do
        echo "=== $side, round $round"
        env $(side_env $side) python tools/time_model.py --repeats 5 2>&1 | grep -vE "^\s*$"
        env $(side_env $side) python tools/profile_inference.py --top 8 2>&1
    done
done > $OUT/ab.txt
grep -E "===|fused|GPU kernel time|mlp_fwd_kernel" $OUT/ab.txt | cut -c1-160
if [ "${BENCH:-0}" = 1 ]; then
    for side in before after; do
        env $(side_env $side) python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 10 \
            > $OUT/bench-$side.txt 2>&1
        grep -E "Gpix/s|graphed|checks passed" $OUT/bench-$side.txt | head -30
    done
fi
ls -la $OUT
