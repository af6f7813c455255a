#!/bin/bash
# Session 43's last call, on today's defaults (front_level.BALANCED_CLASSES and guide_train.WGRAD_WGMMA on): session
# 42's s42_two.sh, whose memcheck now covers the weight-gradient kernel's wgmma form too (its tests take both forms),
# under a longer limit.
#   tests     every CUDA test; the later parts run only if none failed
#   memcheck  compute-sanitizer over the weight-gradient kernel's tests, both forms (the 258 x 258 grid left out)
#   parity    point 4, graphed as kpnt-train trains: shipped, both sensors, 4 seeds
#   full      the full bench_kernels.py --no-compile --parity-steps 0 --reps 20: the README's table
# About 7 minutes.
MEMCHECK_S=${MEMCHECK_S:-150} exec bash "$(dirname "$0")/s42_two.sh"
