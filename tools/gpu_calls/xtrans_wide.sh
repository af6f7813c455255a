#!/bin/bash
# Session 21: the X-Trans guide packs a whole 6x6 repeat (108 output values) through 64 channels, where Bayer's packs
# 12 through the same 64. Grow it (kpnt-train --init with a larger --guide-width: kpnt.ref.guide.grow_projection_guide,
# the same function at the start) and fine-tune, one run per width in WIDTHS, side by side on the GPU.
#   INIT   X-Trans weights to start from (default: the shipped file; %w stands for the width); a file already W wide
#          is fine-tuned as it is (--guide-width W then changes nothing).
#          Session 21's stage w1 started from the session-19 file, shipped then: to redo it, `git show
#          7e61555:kpnt/weights/xtrans.safetensors > runs/s21prev/xtrans.safetensors` and INIT=runs/s21prev/xtrans.safetensors
#   TRAIN  clean photos (default .gpu5/s3train); STAGE names the runs; LR (default 2e-4, 300 warm-up steps)
#   STEPS  per width, "W:STEPS" pairs; END: seconds since the call began when training must stop (default 560)
#   TIME=1 first times 24-MP inference (tools/time_model.py) of the files in TIMEFILES beside the shipped ones
# Carry $TRAIN, .gpu4/val8w, .gpu4/noiseprofiles.json (and INIT / TIMEFILES when not tracked).
# Outputs: $OUT/time.txt, $OUT/train.txt; per run its weights in 15-MiB parts ($OUT/<run>.safetensors.partNN: cat them)
# and $OUT/<run>-logs.tgz (history, log); FETCH names more weights files to bring back the same way.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
T0=$(date +%s); END=${END:-560}; LR=${LR:-2e-4}; INIT=${INIT:-kpnt/weights/xtrans.safetensors}; TRAIN=${TRAIN:-.gpu5/s3train}
STAGE=${STAGE:-w1}; WIDTHS=${WIDTHS:-"128 192"}; STEPS=${STEPS:-"128:10000 192:7000"}
pip install -q -e . --no-deps --no-build-isolation 2>&1 | tail -2
nvidia-smi -L
[ "${TIME:-0}" = 1 ] && python tools/time_model.py --weights kpnt/weights/bayer.safetensors kpnt/weights/xtrans.safetensors \
    $TIMEFILES 2>&1 | tee $OUT/time.txt
MIN=$(python -c "print(round(($END - $(date +%s) + $T0 - 45) / 60, 2))")
echo "training $MIN min"
LX="--clean-share 0.25 --low-noise-share 0.35 --loss smape-lowpass-satbias --guide-dtype bfloat16"
C="--out runs/s21 --clean $TRAIN --val .gpu4/val8w --val-images 8 --profiles .gpu4/noiseprofiles.json --val-every 1000 --ckpt-every 1000 --threads 4 --backend cuda --minutes $MIN"
for w in $WIDTHS; do
    n=$(echo " $STEPS " | grep -oE " $w:[0-9]+ " | cut -d: -f2 | tr -d ' ')
    [ -n "$n" ] || { echo "STEPS names no step count for width $w"; exit 2; }
    python tools/train_variants.py $C --steps $n --lr $LR --seed 1 \
        --variant "xtrans:w$w-$STAGE:--init ${INIT//%w/$w} --warmup 300 --guide-width $w $LX" > $OUT/train$w.txt 2>&1 &
done
wait
cat $OUT/train[0-9]*.txt > $OUT/train.txt; rm $OUT/train[0-9]*.txt; cat $OUT/train.txt
for r in runs/s21/*.log; do echo "== $r"; grep -E "val|rror|steps/s" $r | tail -14; done
# $OUT takes files of at most 16 MiB: weights in 15-MiB parts (cat them back), logs and histories apart.
for w in $WIDTHS; do n=xtrans-w$w-$STAGE; d=runs/s21/$n
    split -b 15M -d $d/weights.safetensors $OUT/$n.safetensors.part
    tar czf $OUT/$n-logs.tgz $d/history.json runs/s21/$n.log; done
for f in $FETCH; do split -b 15M -d $f $OUT/$(basename $(dirname $f)).safetensors.part; done
ls -la $OUT
