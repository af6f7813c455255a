#!/bin/bash
# Session 48: more stages of session 47's fine-tuning on the fused graphed step (tools/gpu_calls/s47_train.sh has the
# recipe and its reasons), with an optional third run for a same-photos, same-clock A/B of the X-Trans guide's
# training precision: X-Trans has trained with the bfloat16 guide since session 21, and session 47 found the bf16
# guide costing the converged Bayer file 0.2-0.3 dB when fine-tuned.
#   TRAIN  clean photos (a part of `python tools/pack_photos.py ../shared/data/photos/train .gpu5/train4 --parts 4`)
#   STAGE  names the runs; END seconds since the call began when training must stop; LR (default 1e-4)
#   XTRANS_AB=1  also trains X-Trans from the same file with the float32 guide as <stage>f (three runs on the GPU)
#   BAYER_GUIDE, XTRANS_GUIDE  the guide's training precision (default float32 / bfloat16)
# Added in session 49 (tools/gpu_calls/s49_train.sh sets SESSION=49; the defaults are session 48's calls):
#   SESSION  names the runs' folder runs/s<SESSION> and is the seed (default 48)
#   INIT_B, INIT_X  the files to start from (default the shipped ones; on a warm machine a stage can start from
#          the previous call's runs/s<SESSION>/<sensor>-<stage>/weights.safetensors without a round trip)
#   EXTRA  more kpnt-train flags for every run
#   T0  the call's start (seconds since the epoch) when something ran before this script in the same call
# Carry $TRAIN and .gpu4 (val8w: `python tools/pack_photos.py ../shared/data/photos/val .gpu4/val8w --parts 1
# --first 8`; noiseprofiles.json: a copy of ../shared/data/noiseprofiles.json).
# Session 48's calls (an H200: no H100 could be started):
#   TRAIN=.gpu5/train4/c STAGE=t3 XTRANS_AB=1 END=540 bash tools/gpu_calls/s48_train.sh   # H200, 516 s
#   cp <bayer-t3.safetensors> kpnt/weights/bayer.safetensors; cp <xtrans-t3.safetensors> kpnt/weights/xtrans.safetensors
#   TRAIN=.gpu5/train4/d STAGE=t4 END=470 bash tools/gpu_calls/s48_train.sh               # the same warm H200, 446 s
# Outputs: $OUT/<sensor>-<stage>.safetensors (last weights), $OUT/<sensor>-<stage>-logs.tgz, $OUT/train.txt.
T0=${T0:-$(date +%s)}; END=${END:-570}; LR=${LR:-1e-4}; TRAIN=${TRAIN:-.gpu5/train4/c}; STAGE=${STAGE:-t3}
source tools/gpu_calls/preamble.sh
MIN=$(python -c "print(round(($END - $(date +%s) + $T0 - 40) / 60, 2))")
echo "training $MIN min a run"
L="--clean-share 0.25 --low-noise-share 0.35 --loss smape-satbias --satbias-weight 0.05"
LX="--clean-share 0.25 --low-noise-share 0.35 --loss smape-lowpass-satbias"
SESSION=${SESSION:-48}; R=runs/s$SESSION
INIT_B=${INIT_B:-kpnt/weights/bayer.safetensors}; INIT_X=${INIT_X:-kpnt/weights/xtrans.safetensors}
C="--out $R --clean $TRAIN --val .gpu4/val8w --val-images 8 --profiles .gpu4/noiseprofiles.json --val-every 2000
   --ckpt-every 2000 --threads 4 --backend cuda --minutes $MIN --steps 400000 --lr $LR --seed $SESSION"
G="--warmup 300 --anneal-by-time"
python tools/train_variants.py $C --variant "bayer:$STAGE:--init $INIT_B $G --guide-dtype ${BAYER_GUIDE:-float32} $L $EXTRA" \
    > $OUT/trainB.txt 2>&1 &
python tools/train_variants.py $C --variant "xtrans:$STAGE:--init $INIT_X $G --guide-dtype ${XTRANS_GUIDE:-bfloat16} $LX $EXTRA" \
    > $OUT/trainX.txt 2>&1 &
RUNS="bayer-$STAGE xtrans-$STAGE"
if [ -n "$XTRANS_AB" ]; then
    RUNS="$RUNS xtrans-${STAGE}f"
    python tools/train_variants.py $C --variant "xtrans:${STAGE}f:--init $INIT_X $G --guide-dtype float32 $LX $EXTRA" \
        > $OUT/trainXf.txt 2>&1 &
fi
wait
cat $OUT/trainB.txt $OUT/trainX.txt $OUT/trainXf.txt > $OUT/train.txt 2>/dev/null; rm -f $OUT/trainB.txt $OUT/trainX.txt $OUT/trainXf.txt
# Only this call's runs: a warm machine keeps runs/ from the call before (session 48's t4 call returned t3's
# files as well, and a call brings back at most 8 files: xtrans-t4's weights needed a third call).
for n in $RUNS; do r=$R/$n.log; echo "== $r"; grep -E "val|rror|budget|steps/s" $r | tail -8; done
for n in $RUNS; do d=$R/$n
    cp $d/weights.safetensors $OUT/$n.safetensors
    tar czf $OUT/$n-logs.tgz $d/history.json $R/$n.log; done
ls -la $OUT
