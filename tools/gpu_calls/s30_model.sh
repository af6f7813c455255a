#!/bin/bash
# Session 30, call 5: point 5 (24-MP inference of the shipped models, model only, at most 30 ms) with this session's
# kernels (the wgmma forwards' descriptors changed; results bitwise as before, call 4).  About 3 minutes.
source "$(dirname "$0")/preamble.sh"
timeout 300 python tools/time_model.py --repeats 10 > $OUT/time_model.txt 2>&1
tail -12 $OUT/time_model.txt
