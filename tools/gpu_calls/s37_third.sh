#!/bin/bash
# Session 37's third call: every CUDA test with FUSED_PROJ_PROLOGUE on by default (call 2 ran them with it off; the
# prologue's own tests set it both ways).
source "$(dirname "$0")/preamble.sh"
cuda_tests 150
python -c "import kpnt.ops._cuda.guide_train as g; print('FUSED_PROJ_PROLOGUE =', g.FUSED_PROJ_PROLOGUE)"
true
