#!/bin/bash
# Session 31, call 3: the fused guide training path (cf0db7a and the test fix after it) through every CUDA test,
# memcheck of its kernels, and the full acceptance bench (point 1's checks now cover the shipped model's guide on
# the fused passes; point 2's rows).  rerun: tools/mlp_identity.py --models twice on the same build, to tell whether
# call 1's X-Trans step differences (9.3e-10, against dd1dbcc's kernels) are run-to-run nondeterminism.
# parity (last, may be cut by the time left): point 4 on the written-out guide, 2 seeds of the shipped architecture.
PARTS=${PARTS:-tests bench memcheck rerun parity}
source "$(dirname "$0")/preamble.sh"
for part in $PARTS; do
    echo "=== $part"
    case $part in
    tests)
        timeout 200 python -m pytest -q -p no:cacheprovider tests/cuda > $OUT/tests.txt 2>&1
        grep -E "^FAILED|^ERROR|passed|failed" $OUT/tests.txt | head -30 ;;
    memcheck)
        timeout 120 compute-sanitizer --tool memcheck python tools/mlp_sanitize_run.py --guide --no-mlp \
            > $OUT/memcheck.txt 2>&1
        grep -E "ERROR SUMMARY|done|ok" $OUT/memcheck.txt | tail -5 ;;
    rerun)
        python tools/mlp_identity.py save --models /tmp/id_a.pt > /dev/null && \
            python tools/mlp_identity.py save --models /tmp/id_b.pt > /dev/null && \
            python tools/mlp_identity.py compare /tmp/id_a.pt /tmp/id_b.pt > $OUT/rerun.txt 2>&1
        cat $OUT/rerun.txt ;;
    bench)
        timeout 330 python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 > $OUT/bench.txt 2>&1
        grep -E "^device|checks:|FAIL" $OUT/bench.txt | head -20
        grep -A10 "issue 14's targets" $OUT/bench.txt
        grep -A8 "== train step 4x512" $OUT/bench.txt ;;
    parity)
        timeout 200 python tools/bench_kernels.py --parity-only --parity-archs shipped --parity-seeds 2 \
            > $OUT/parity.txt 2>&1
        grep -E "parity|checks:" $OUT/parity.txt | tail -12 ;;
    esac
done
