#!/bin/bash
# Session 17, GPU calls 2+: resume A (bayer proj-scratch) and run/resume the X-Trans fine-tune C
# (shipped X-Trans file converted to projection blocks + revived, 10000 steps at 3e-4, the shipped X-Trans loss).
# Env: MIN (training minutes), ASTEPS (A's schedule length; re-aim in the last call), XFT=0 to skip C, BFT=1 to resume B.
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
MIN=${MIN:-8.3}; ASTEPS=${ASTEPS:-40000}; XFT=${XFT:-1}; BFT=${BFT:-0}
pip install -q -e . --no-deps --no-build-isolation 2>&1 | tail -2
for t in .gpu5/back/*.tar; do [ -f "$t" ] && [ ! -f runs/s17/$(basename $t .tar)/checkpoint.pt ] && tar xf $t && echo "restored $t"; done
ls runs/s17 runs/s17/*; find .gpu5/train -name '*.webp' | wc -l
L="--clean-share 0.25 --low-noise-share 0.35 --loss smape-satbias --satbias-weight 0.05"
LX="--clean-share 0.25 --low-noise-share 0.35 --loss smape-lowpass-satbias"
C="--out runs/s17 --clean .gpu5/train --val .gpu4/val8w --val-images 8 --profiles .gpu4/noiseprofiles.json --val-every 1000 --ckpt-every 1000 --threads 4 --backend cuda --minutes $MIN"
python tools/train_variants.py $C --steps $ASTEPS --resume --variant "bayer:proj-scratch:--guide-proj --warmup 1000 $L" > $OUT/trainA.txt 2>&1 &
if [ "$XFT" = 1 ]; then
python tools/train_variants.py $C --steps 10000 --lr 3e-4 --resume \
   --variant "xtrans:proj-ft:--init kpnt/weights/xtrans.safetensors --guide-proj --revive-dead-guide --warmup 500 $LX" > $OUT/trainC.txt 2>&1 &
fi
if [ "$BFT" = 1 ]; then
python tools/train_variants.py $C --steps 10000 --lr 3e-4 --resume \
   --variant "bayer:proj-ft:--init kpnt/weights/bayer.safetensors --guide-proj --revive-dead-guide --warmup 500 $L" > $OUT/trainB.txt 2>&1 &
fi
wait
cat $OUT/train*.txt
for r in runs/s17/*.log; do echo "== $r"; grep -E "val|rror" $r | tail -14; done
for d in runs/s17/*/; do n=$(basename $d); tar cf $OUT/$n.tar --exclude=curve.png $d runs/s17/$n.log; done
ls -la $OUT
