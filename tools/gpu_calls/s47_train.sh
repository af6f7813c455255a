#!/bin/bash
# Session 47: the shipped files fine-tuned further on the fused graphed step (issue 14's kernels make a step ~3x
# cheaper than when the shipped files were trained: sessions 19-21). One stage a call: Bayer and X-Trans side by
# side, each from kpnt/weights/<sensor>.safetensors as it stands in the working tree (the previous stage's output
# copied over it between calls; the tracked files only at stage 1), a fresh Adam warmed up over 300 steps, the
# cosine schedule annealed by the clock (--anneal-by-time), so each stage ends at lr/10 when its time is up.
#   TRAIN  clean photos (a part of tools/pack_photos.py ... --parts 4); STAGE names the runs; LR (default 1e-4)
#   END    seconds since the call began when training must stop (default 570)
#   BAYER_GUIDE, XTRANS_GUIDE  the guide's training precision (default float32 / bfloat16: stage t1 ran Bayer in
#          bfloat16 and lost 0.2-0.3 dB on clean mosaics, X-Trans's file was trained in bfloat16 since session 21)
# Carry $TRAIN, .gpu4/val8w, .gpu4/noiseprofiles.json.
# The two calls of session 47 (H100; photos from `python tools/pack_photos.py ../shared/data/photos/train .gpu5/train4
# --parts 4`; .gpu4/val8w the first 8 photos/val as lossless WebP, `python tools/pack_photos.py ../shared/data/photos/val
# .gpu4/val8w --parts 1 --first 8`; .gpu4/noiseprofiles.json a copy of ../shared/data/noiseprofiles.json):
#   BAYER_GUIDE=bfloat16 bash tools/gpu_calls/s47_train.sh      # t1, part a, the tracked files (Bayer t1 not kept)
#   cp <xtrans-t1.safetensors> kpnt/weights/xtrans.safetensors  # X-Trans goes on from t1; Bayer starts over
#   TRAIN=.gpu5/train4/b STAGE=t2 END=540 bash tools/gpu_calls/s47_train.sh      # t2: the shipped files since
# Outputs: $OUT/<sensor>-<stage>.safetensors (last weights), $OUT/<sensor>-<stage>-logs.tgz, $OUT/train.txt.
T0=$(date +%s); END=${END:-570}; LR=${LR:-1e-4}; TRAIN=${TRAIN:-.gpu5/train4/a}; STAGE=${STAGE:-t1}
source tools/gpu_calls/preamble.sh
MIN=$(python -c "print(round(($END - $(date +%s) + $T0 - 40) / 60, 2))")
echo "training $MIN min a run"
L="--clean-share 0.25 --low-noise-share 0.35 --loss smape-satbias --satbias-weight 0.05"
LX="--clean-share 0.25 --low-noise-share 0.35 --loss smape-lowpass-satbias"
C="--out runs/s47 --clean $TRAIN --val .gpu4/val8w --val-images 8 --profiles .gpu4/noiseprofiles.json --val-every 2000
   --ckpt-every 2000 --threads 4 --backend cuda --minutes $MIN --steps 400000 --lr $LR --seed 47"
G="--warmup 300 --anneal-by-time"
python tools/train_variants.py $C --variant "bayer:$STAGE:--init kpnt/weights/bayer.safetensors $G --guide-dtype ${BAYER_GUIDE:-float32} $L" \
    > $OUT/trainB.txt 2>&1 &
python tools/train_variants.py $C --variant "xtrans:$STAGE:--init kpnt/weights/xtrans.safetensors $G --guide-dtype ${XTRANS_GUIDE:-bfloat16} $LX" \
    > $OUT/trainX.txt 2>&1 &
wait
cat $OUT/trainB.txt $OUT/trainX.txt > $OUT/train.txt; rm $OUT/trainB.txt $OUT/trainX.txt
for r in runs/s47/*.log; do echo "== $r"; grep -E "val|rror|budget|steps/s" $r | tail -8; done
for s in bayer xtrans; do d=runs/s47/$s-$STAGE
    cp $d/weights.safetensors $OUT/$s-$STAGE.safetensors
    tar czf $OUT/$s-$STAGE-logs.tgz $d/history.json runs/s47/$s-$STAGE.log; done
ls -la $OUT
