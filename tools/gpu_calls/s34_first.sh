#!/bin/bash
# For session 34's first call (written in session 33, whose device time ran out; about 9 minutes).
#   full    the full bench_kernels.py --no-compile --parity-steps 0 on session 33's kernels (its 151 checks last
#           ran in session 31; sessions 32-33 timed only the step rows)
#   parity  bf16 Bayer parity with the fused projection forward on and off, same seeds (session 33: -0.063 dB over
#           5 seeds on its kernels against -0.011 over 9 on session 32's; which change, or noise?)
PARTS=${PARTS:-full parity}
source "$(dirname "$0")/preamble.sh"
parity() {  # $1: FUSED_PROJ_FORWARD (True / False), $2: output file
    timeout ${PARITY_S:-130} python -c "
import runpy, sys
import kpnt.ops._cuda.guide_train as g
g.FUSED_PROJ_FORWARD = $1
sys.argv = ['bench_kernels.py', '--parity-only', '--parity-archs', 'shipped-bf16:bayer', '--parity-seeds', '6',
            '--parity-first-seed', '11']
runpy.run_path('tools/bench_kernels.py', run_name='__main__')" > $2 2>&1
    grep -E "^parity|check" $2 | tail -3
}
for part in $PARTS; do
    echo "=== $part"
    case $part in
    full)
        timeout ${FULL_S:-300} python tools/bench_kernels.py --no-compile --parity-steps 0 --reps 20 \
            > $OUT/full.txt 2>&1
        grep -E "checks:|FAIL" $OUT/full.txt | head -12
        grep -A14 "targets, this run" $OUT/full.txt | head -16 ;;
    parity)
        parity True $OUT/parity_projfwd_on.txt
        parity False $OUT/parity_projfwd_off.txt ;;
    esac
done
true
