#!/bin/bash
# Session 50: stages t7-t9 of the second pass over the quarters of photos/train (parts c, d, then a again), each
# starting from the one before on the warm machine, recipe unchanged (s47_train.sh has it and its reasons; the runs
# are named runs/s49/ because s49_train.sh sets SESSION=49, so seed 49 as well). The shipped files are the uniform
# mean of t7, t8 and t9 (tools/average_weights.py; docs/QUALITY.md, "Session 50"). CALL=1, 2 or 3 runs that call
# (session 50: one H100, warm through all three; carry the TRAIN part and .gpu4 as s49_train.sh says):
#   export T0=$(date +%s); TRAIN=.gpu5/train4/c AB_S=20 bash tools/gpu_calls/s49_alone.sh
#       TRAIN=.gpu5/train4/c STAGE=t7 END=565 bash tools/gpu_calls/s49_train.sh                              # 542 s
#   INIT_B=runs/s49/bayer-t7/weights.safetensors INIT_X=runs/s49/xtrans-t7/weights.safetensors \
#       TRAIN=.gpu5/train4/d STAGE=t8 END=555 bash tools/gpu_calls/s49_train.sh                              # 530 s
#   INIT_B=runs/s49/bayer-t8/weights.safetensors INIT_X=runs/s49/xtrans-t8/weights.safetensors \
#       TRAIN=.gpu5/train4/a STAGE=t9 END=490 bash tools/gpu_calls/s49_train.sh                              # 468 s
# then, on the CPU:
#   for s in bayer xtrans; do python tools/average_weights.py runs/s49/$s-t{7,8,9}.safetensors -o kpnt/weights/$s.safetensors; done
R=runs/s49
case "$CALL" in
    1) export T0=$(date +%s); TRAIN=.gpu5/train4/c AB_S=20 bash tools/gpu_calls/s49_alone.sh
       TRAIN=.gpu5/train4/c STAGE=t7 END=565 exec bash tools/gpu_calls/s49_train.sh ;;
    2) INIT_B=$R/bayer-t7/weights.safetensors INIT_X=$R/xtrans-t7/weights.safetensors \
       TRAIN=.gpu5/train4/d STAGE=t8 END=555 exec bash tools/gpu_calls/s49_train.sh ;;
    3) INIT_B=$R/bayer-t8/weights.safetensors INIT_X=$R/xtrans-t8/weights.safetensors \
       TRAIN=.gpu5/train4/a STAGE=t9 END=490 exec bash tools/gpu_calls/s49_train.sh ;;
    *) echo "set CALL=1, 2 or 3 (calls 2 and 3 need the machine that ran the call before: they start from its runs)" >&2
       exit 2 ;;
esac
