#!/bin/bash
# Session 39's last call: point 4's parity with the fused side trained as kpnt-train trains it (GraphedStep: CUDA
# graphs and the update kernels on by default since session 38), shipped architecture, both sensors, 4 seeds.
# Earlier parity runs trained the fused side eagerly, so they did not cover the update kernels.
source "$(dirname "$0")/preamble.sh"
timeout ${PARITY_S:-220} bash -c "bench '' $OUT/parity.txt --parity-only --parity-archs shipped \
    --parity-seeds ${SEEDS:-4} --parity-graphed"
grep -E "parity|rror" $OUT/parity.txt | grep -v Warning | tail -24
