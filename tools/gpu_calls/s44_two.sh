#!/bin/bash
# Session 44's second call, with guide_train.WGRAD_WGMMA_SPECIALIZED on (s44_one.sh: same bits, Bayer faster in both
# rounds; racecheck reported races on its bar.arrive handoff):
#   probe     racecheck_arrive_probe.cu under racecheck, three forms: does racecheck model bar.arrive? (form 0 is the
#             kernel's handoff, form 1 the same with bar.sync only, form 2 a real race)
#   widths    WGRAD_WGMMA_WIDTHS (64,) / (64,128) over two rounds (X-Trans's 128 channels on the specialized form or
#             cuDNN's; Bayer the control); if X-Trans is faster in both rounds the later parts run with (64,128)
#   then s42_two.sh's parts: every CUDA test, memcheck of the weight gradient's tests, graphed parity, the full bench
# About 7 minutes with the build.
source "$(dirname "$0")/preamble.sh"
source "$(dirname "$0")/ab_rounds.sh"
echo "=== probe $(date +%T)"
$(command -v nvcc || echo /usr/local/cuda/bin/nvcc) -arch=sm_90 -o /tmp/probe tools/gpu_calls/racecheck_arrive_probe.cu
for f in 0 1 2; do
    timeout 60 compute-sanitizer --tool racecheck /tmp/probe $f > $OUT/probe$f.txt 2>&1
    echo "form $f rc $?: $(grep -E "^form|RACECHECK SUMMARY" $OUT/probe$f.txt | tr '\n' ' ')"
done
cat $OUT/probe*.txt > $OUT/racecheck_probe.txt && rm $OUT/probe*.txt
echo "=== widths $(date +%T)"
ab_rounds ws_widths WGRAD_WGMMA_WIDTHS "g.WGRAD_WGMMA_WIDTHS = VALUE" "(64,)" "(64,128)" shipped
WIDTHS=$(faster ws_widths "(64,)" "(64,128)" xtrans shipped)
echo "X-Trans takes the specialized form at 128 channels: $WIDTHS"
if [ "$WIDTHS" = "(64,128)" ]; then
    sed -i 's/^WGRAD_WGMMA_WIDTHS = (64,)$/WGRAD_WGMMA_WIDTHS = (64, 128)/' kpnt/ops/_cuda/guide_train.py
    grep -n "^WGRAD_WGMMA_WIDTHS" kpnt/ops/_cuda/guide_train.py
fi
MEMCHECK_S=150 FULL_S=250 bash "$(dirname "$0")/s42_two.sh"
