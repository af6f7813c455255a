#!/bin/bash
# Session 19, second GPU call: after stage 1 (proj_guide.sh: the shipped files converted to projection-block guides,
# dead channels revived, 10000 steps at 3e-4 on half a of photos/train):
#   1. 24-MP inference timings of the shipped files and the stage-1 weights (tools/time_model.py, alone on the GPU);
#   2. the guide CUDA tests (the projection guide's cuDNN inference path, the bf16 attribute test; TESTS=tests/cuda: all);
#   3. stage 2: both stage-1 files fine-tuned again at LR (default 2e-4, 300 warm-up steps) on .gpu5/s2train
#      (109 photos of half b), in what is left of END seconds (default 555) since the call began.
# Carry .gpu5/s1 (bayer/xtrans.safetensors from stage 1), .gpu5/s2train, .gpu4/val8w, .gpu4/noiseprofiles.json.
# Later stages: INIT=.gpu5/s2 TRAIN=.gpu5/s3train STAGE=s3 TIME=0 TESTS=none (no timing, no tests; carry those folders;
# .gpu5/s3train: half a without every 6th photo, so the call's carry stays under 64 MiB).
# Outputs: $OUT/time.txt, $OUT/tests.txt, $OUT/train*.txt, one $OUT/<run>.tar per run (weights, history, log).
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
T0=$(date +%s); END=${END:-555}; LR=${LR:-2e-4}; INIT=${INIT:-.gpu5/s1}; TRAIN=${TRAIN:-.gpu5/s2train}; STAGE=${STAGE:-s2}
pip install -q -e . --no-deps --no-build-isolation 2>&1 | tail -2
nvidia-smi -L
[ "${TIME:-1}" = 1 ] && python tools/time_model.py --weights kpnt/weights/bayer.safetensors $INIT/bayer.safetensors \
    kpnt/weights/xtrans.safetensors $INIT/xtrans.safetensors 2>&1 | tee $OUT/time.txt
[ "${TESTS:-}" != none ] && timeout 150 python -m pytest -q -p no:cacheprovider ${TESTS:-tests/cuda/test_guide_precision.py} 2>&1 | tee $OUT/tests.txt | tail -3
# Training gets what is left of END seconds after ~45 s of start-up and packing; the schedule is sized to finish in
# it at 25 steps/s per run (stage 1, two runs sharing the H100: Bayer 26.7, X-Trans 33 steps/s).
MIN=$(python -c "print(round(($END - $(date +%s) + $T0 - 45) / 60, 2))"); STEPS=${STEPS:-$(python -c "print(int($MIN * 60 * 25))")}
echo "training $MIN min, $STEPS steps"
L="--clean-share 0.25 --low-noise-share 0.35 --loss smape-satbias --satbias-weight 0.05"
LX="--clean-share 0.25 --low-noise-share 0.35 --loss smape-lowpass-satbias"
C="--out runs/s19 --clean $TRAIN --val .gpu4/val8w --val-images 8 --profiles .gpu4/noiseprofiles.json --val-every 1000 --ckpt-every 1000 --threads 4 --backend cuda --minutes $MIN"
FT="--steps $STEPS --lr $LR --seed 1"
python tools/train_variants.py $C $FT --variant "bayer:proj-$STAGE:--init $INIT/bayer.safetensors --warmup 300 $L" > $OUT/trainB.txt 2>&1 &
python tools/train_variants.py $C $FT --variant "xtrans:proj-$STAGE:--init $INIT/xtrans.safetensors --warmup 300 $LX" > $OUT/trainC.txt 2>&1 &
wait
cat $OUT/train*.txt
for r in runs/s19/*.log; do echo "== $r"; grep -E "val|rror" $r | tail -12; done
for d in runs/s19/*/; do n=$(basename $d); tar cf $OUT/$n.tar --exclude=curve.png --exclude=checkpoint.pt $d runs/s19/$n.log; done
ls -la $OUT
