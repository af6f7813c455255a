#!/bin/bash
# NOTE: the shipped files here are those before session 19 shipped its own (commit 57c699a); to rerun this as it ran,
#       first: git checkout 57c699a -- kpnt/weights   (and git checkout HEAD -- kpnt/weights afterwards).
# Session 17's planned GPU calls (not run: no GPU was lent): projection-block guides at scale, side by side on one H200.
#   A  bayer proj-scratch: projection-block guide from random weights, full recipe, ASTEPS-step schedule (resumed each call)
#   B  bayer proj-ft: shipped Bayer file converted to projection blocks + dead channels revived, 10000 steps at 3e-4
#   C  xtrans proj-ft: the same from the shipped X-Trans file, with the shipped X-Trans loss
# Env: MIN (training minutes), ASTEPS (A's schedule; re-aim it in the last call), TESTS=1 runs tests/cuda first,
#      ASC=1 / BFT=1 / XFT=1 run or resume A / B / C, FTSTEPS (B's and C's schedule, default 10000; re-aim it in
#      the last call), TIME=1 times 24-MP inference of the shipped files and of B's and C's weights after training
#      (tools/time_model.py, alone on the GPU).
#      Session 17's plan: first call TESTS=1 BFT=1 XFT=0 MIN=6.8; later calls XFT=1 MIN=8.3.
#      Session 19 (H100, one 30-min budget): ASC=0 throughout, B and C side by side from the first call.
# Carry .gpu5/train/a (or b), .gpu4/val8w, .gpu4/noiseprofiles.json (and .gpu5/back/*.tar after a fresh machine).
# Outputs: $OUT/tests.txt, $OUT/train*.txt, one $OUT/<run>.tar per run (weights, checkpoint, history, log).
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
MIN=${MIN:-8.3}; ASTEPS=${ASTEPS:-40000}; TESTS=${TESTS:-0}; ASC=${ASC:-1}; BFT=${BFT:-0}; XFT=${XFT:-1}
FTSTEPS=${FTSTEPS:-10000}; TIME=${TIME:-0}; TESTS_S=${TESTS_S:-170}
pip install -q -e . --no-deps --no-build-isolation 2>&1 | tail -2
if [ "$TESTS" = 1 ]; then
    nvidia-smi -L
    timeout $TESTS_S python -m pytest -q -p no:cacheprovider tests/cuda 2>&1 | tee $OUT/tests.txt | tail -15
fi
for t in .gpu5/back/*.tar; do [ -f "$t" ] && [ ! -f runs/s17/$(basename $t .tar)/checkpoint.pt ] && tar xf $t && echo "restored $t"; done
find .gpu5/train -name '*.webp' | wc -l
L="--clean-share 0.25 --low-noise-share 0.35 --loss smape-satbias --satbias-weight 0.05"
LX="--clean-share 0.25 --low-noise-share 0.35 --loss smape-lowpass-satbias"
C="--out runs/s17 --clean .gpu5/train --val .gpu4/val8w --val-images 8 --profiles .gpu4/noiseprofiles.json --val-every 1000 --ckpt-every 1000 --threads 4 --backend cuda --minutes $MIN --resume"
FT="--steps $FTSTEPS --lr 3e-4"
REV="--guide-proj --revive-dead-guide --warmup 500"
[ "$ASC" = 1 ] && python tools/train_variants.py $C --steps $ASTEPS --variant "bayer:proj-scratch:--guide-proj --warmup 1000 $L" > $OUT/trainA.txt 2>&1 &
[ "$BFT" = 1 ] && python tools/train_variants.py $C $FT --variant "bayer:proj-ft:--init kpnt/weights/bayer.safetensors $REV $L" > $OUT/trainB.txt 2>&1 &
[ "$XFT" = 1 ] && python tools/train_variants.py $C $FT --variant "xtrans:proj-ft:--init kpnt/weights/xtrans.safetensors $REV $LX" > $OUT/trainC.txt 2>&1 &
wait
cat $OUT/train*.txt
for r in runs/s17/*.log; do echo "== $r"; grep -E "val|rror" $r | tail -14; done
for d in runs/s17/*/; do n=$(basename $d); tar cf $OUT/$n.tar --exclude=curve.png $d runs/s17/$n.log; done
if [ "$TIME" = 1 ]; then
    W="kpnt/weights/bayer.safetensors kpnt/weights/xtrans.safetensors"
    for r in bayer-proj-ft xtrans-proj-ft; do [ -f runs/s17/$r/weights.safetensors ] && W="$W runs/s17/$r/weights.safetensors"; done
    nvidia-smi -L
    python tools/time_model.py --weights $W 2>&1 | tee $OUT/time.txt
fi
ls -la $OUT
