#!/bin/bash
# Session 49: a second pass of session 47-48's fine-tuning stages over the quarters of photos/train, on the fused
# graphed step (tools/gpu_calls/s47_train.sh has the recipe and its reasons; s48_train.sh the A/B run's option).
#   TRAIN  clean photos (a part of `python tools/pack_photos.py ../shared/data/photos/train .gpu5/train4 --parts 4`)
#   STAGE  names the runs; END seconds since the call began when training must stop; LR (default 1e-4)
#   XTRANS_AB=1  also trains X-Trans from the same file with the float32 guide as <stage>f (three runs on the GPU)
#   BAYER_GUIDE, XTRANS_GUIDE  the guide's training precision (default float32 / bfloat16)
#   EXTRA  more kpnt-train flags for both runs (session 49's calls passed --no-overlap, a flag of commit ca26734
#          that was taken out after them: s49_overlap.sh says why)
#   INIT_B, INIT_X  the files to start from (default the shipped ones; on a warm machine a stage can start from
#          the previous call's runs/s49/<sensor>-<stage>/weights.safetensors without a round trip)
# Carry $TRAIN and .gpu4 (val8w: `python tools/pack_photos.py ../shared/data/photos/val .gpu4/val8w --parts 1
# --first 8`; noiseprofiles.json: a copy of ../shared/data/noiseprofiles.json).
# Session 49's calls (one H100, warm between them; no H200 could be started):
#   export T0=$(date +%s); bash tools/gpu_calls/s49_overlap.sh; E=""; [ -f /tmp/overlap_ok ] || E=--no-overlap
#   EXTRA=$E TRAIN=.gpu5/train4/a STAGE=t5 END=585 bash tools/gpu_calls/s49_train.sh        # 563 s with the A/B
#   EXTRA=--no-overlap INIT_B=runs/s49/bayer-t5/weights.safetensors INIT_X=runs/s49/xtrans-t5/weights.safetensors \
#       TRAIN=.gpu5/train4/b STAGE=t6 END=555 bash tools/gpu_calls/s49_train.sh             # 532 s
# Outputs: $OUT/<sensor>-<stage>.safetensors (last weights), $OUT/<sensor>-<stage>-logs.tgz, $OUT/train.txt.
T0=${T0:-$(date +%s)}; END=${END:-570}; LR=${LR:-1e-4}; TRAIN=${TRAIN:-.gpu5/train4/c}; STAGE=${STAGE:-t3}
source tools/gpu_calls/preamble.sh
MIN=$(python -c "print(round(($END - $(date +%s) + $T0 - 40) / 60, 2))")
echo "training $MIN min a run"
L="--clean-share 0.25 --low-noise-share 0.35 --loss smape-satbias --satbias-weight 0.05"
LX="--clean-share 0.25 --low-noise-share 0.35 --loss smape-lowpass-satbias"
C="--out runs/s49 --clean $TRAIN --val .gpu4/val8w --val-images 8 --profiles .gpu4/noiseprofiles.json --val-every 2000
   --ckpt-every 2000 --threads 4 --backend cuda --minutes $MIN --steps 400000 --lr $LR --seed 49"
G="--warmup 300 --anneal-by-time"
python tools/train_variants.py $C --variant "bayer:$STAGE:--init ${INIT_B:-kpnt/weights/bayer.safetensors} $G --guide-dtype ${BAYER_GUIDE:-float32} $L $EXTRA" \
    > $OUT/trainB.txt 2>&1 &
python tools/train_variants.py $C --variant "xtrans:$STAGE:--init ${INIT_X:-kpnt/weights/xtrans.safetensors} $G --guide-dtype ${XTRANS_GUIDE:-bfloat16} $LX $EXTRA" \
    > $OUT/trainX.txt 2>&1 &
RUNS="bayer-$STAGE xtrans-$STAGE"
if [ -n "$XTRANS_AB" ]; then
    RUNS="$RUNS xtrans-${STAGE}f"
    python tools/train_variants.py $C --variant "xtrans:${STAGE}f:--init kpnt/weights/xtrans.safetensors $G --guide-dtype float32 $LX" \
        > $OUT/trainXf.txt 2>&1 &
fi
wait
cat $OUT/trainB.txt $OUT/trainX.txt $OUT/trainXf.txt > $OUT/train.txt 2>/dev/null; rm -f $OUT/trainB.txt $OUT/trainX.txt $OUT/trainXf.txt
# Only this call's runs: a warm machine keeps runs/ from the call before (session 48's t4 call returned t3's
# files as well, and a call brings back at most 8 files: xtrans-t4's weights needed a third call).
for n in $RUNS; do r=runs/s49/$n.log; echo "== $r"; grep -E "val|rror|budget|steps/s" $r | tail -8; done
for n in $RUNS; do d=runs/s49/$n
    cp $d/weights.safetensors $OUT/$n.safetensors
    tar czf $OUT/$n-logs.tgz $d/history.json runs/s49/$n.log; done
ls -la $OUT
