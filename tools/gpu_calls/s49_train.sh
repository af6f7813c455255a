#!/bin/bash
# Session 49: a second pass of session 47-48's fine-tuning stages over the quarters of photos/train, on the fused
# graphed step (tools/gpu_calls/s47_train.sh has the recipe and its reasons). It is s48_train.sh with
# SESSION=49 (runs/s49, seed 49); the variables below are that script's.
#   TRAIN  clean photos (a part of `python tools/pack_photos.py ../shared/data/photos/train .gpu5/train4 --parts 4`)
#   STAGE  names the runs; END seconds since the call began when training must stop; LR (default 1e-4)
#   XTRANS_AB=1  also trains X-Trans from the same file with the float32 guide as <stage>f (three runs on the GPU)
#   BAYER_GUIDE, XTRANS_GUIDE  the guide's training precision (default float32 / bfloat16)
#   EXTRA  more kpnt-train flags for both runs (session 49's calls passed --no-overlap, a flag of commit ca26734
#          that was taken out after them: s49_overlap.sh says why)
#   INIT_B, INIT_X  the files to start from (default the shipped ones; on a warm machine a stage can start from
#          the previous call's runs/s49/<sensor>-<stage>/weights.safetensors without a round trip)
#   T0  the call's start, when s49_overlap.sh ran before this script in the same call
# Carry $TRAIN and .gpu4 (val8w: `python tools/pack_photos.py ../shared/data/photos/val .gpu4/val8w --parts 1
# --first 8`; noiseprofiles.json: a copy of ../shared/data/noiseprofiles.json).
# Session 49's calls (one H100, warm between them; no H200 could be started):
#   export T0=$(date +%s); bash tools/gpu_calls/s49_overlap.sh; E=""; [ -f /tmp/overlap_ok ] || E=--no-overlap
#   EXTRA=$E TRAIN=.gpu5/train4/a STAGE=t5 END=585 bash tools/gpu_calls/s49_train.sh        # 563 s with the A/B
#   EXTRA=--no-overlap INIT_B=runs/s49/bayer-t5/weights.safetensors INIT_X=runs/s49/xtrans-t5/weights.safetensors \
#       TRAIN=.gpu5/train4/b STAGE=t6 END=555 bash tools/gpu_calls/s49_train.sh             # 532 s
# Outputs: $OUT/<sensor>-<stage>.safetensors (last weights), $OUT/<sensor>-<stage>-logs.tgz, $OUT/train.txt.
export SESSION=49
exec bash tools/gpu_calls/s48_train.sh
