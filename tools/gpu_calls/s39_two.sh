#!/bin/bash
# Session 39's third call: why the front backward's spread over unequal classes (front_level.UNEVEN_CLASSES_SPREAD 4)
# left the graphed X-Trans steps unchanged (session 39's first call: 6.84 / 6.81 ms with it against 6.84 / 6.85,
# bf16 4.94 / 4.90 against 4.90 / 4.89): the graphed X-Trans steps' kernels with the spread at 1 and at 4, to see
# whether the front MLP backward's kernel time moved at all.
source "$(dirname "$0")/preamble.sh"
for spread in 1 4 1 4; do
    echo "=== spread $spread $(date +%T)"
    timeout 100 bash -c "tool 'import kpnt.ops._cuda.front_level as f; f.UNEVEN_CLASSES_SPREAD = $spread' \
        $OUT/breakdown_spread$spread.txt step_breakdown.py --archs shipped shipped-bf16 --sensors xtrans --graphed --top 6"
    grep -E "^==|mlp_bwd" $OUT/breakdown_spread$spread.txt
done
echo "=== done $(date +%T)"
