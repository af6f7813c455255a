#!/bin/bash
# Written in session 49: does a training run go faster alone on the GPU than beside another?
# Session 49's A/B (s49_overlap.sh) found the host's waits irrelevant with two runs side by side; two processes
# without MPS share the GPU by time slices, so a run alone may make more than twice its steps beside the other.
# Three arms of $AB_S seconds each (the time budget counts from the first step: start-up is not in it):
# Bayer alone, X-Trans alone, both side by side. Steps reached, from the logs, into $OUT/alone_ab.txt.
# Run once, in session 50 (H100, `TRAIN=.gpu5/train4/c AB_S=20`, the start of tools/gpu_calls/s50_train.sh's call 1):
# in 20 s Bayer made 1484 steps alone and 941 beside X-Trans, X-Trans 1698 and 919, so side by side the two do 1.18x
# the work of one after the other and the hypothesis is refuted (docs/bench/train_alone_ab_s50_h100.txt;
# docs/KERNELS.md, "Session 50").
# Carry $TRAIN (default .gpu5/train4/a) and .gpu4 (tools/gpu_calls/s49_train.sh says how to make them).
AB_S=${AB_S:-25}
source tools/gpu_calls/preamble.sh
MIN=$(python -c "print($AB_S / 60)")
C="--clean ${TRAIN:-.gpu5/train4/a} --profiles .gpu4/noiseprofiles.json --camera all --isos 100-409600 --batch 16 --tile 192
   --lr 1e-5 --seed 49 --steps 400000 --val-every 100000 --ckpt-every 100000 --threads 4 --backend cuda --no-progress
   --minutes $MIN --downscale 1"
bayer() { python -m kpnt.train --sensor bayer -o runs/alone49/$1-bayer --init kpnt/weights/bayer.safetensors \
    --loss smape-satbias $C > runs_alone_$1-bayer.log 2>&1; }
xtrans() { python -m kpnt.train --sensor xtrans -o runs/alone49/$1-xtrans --init kpnt/weights/xtrans.safetensors \
    --guide-dtype bfloat16 --loss smape-lowpass-satbias $C > runs_alone_$1-xtrans.log 2>&1; }
bayer alone
xtrans alone
bayer both & xtrans both & wait
for f in runs_alone_*.log; do echo "== $f"; grep -E "budget|rror" $f | tail -2; done | tee $OUT/alone_ab.txt
