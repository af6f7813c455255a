#!/bin/bash
# Session 17, GPU call 1: CUDA tests, then side by side on one H200
#   A  bayer proj-scratch: projection-block guide from random weights, full recipe, 40000-step schedule (resumed later)
#   B  bayer proj-ft: shipped file converted to projection blocks + dead channels revived, 10000 steps at 3e-4
# Outputs: $OUT/tests.txt, $OUT/train.txt, $OUT/runs.tar (weights, checkpoints, histories)
export TORCH_CUDA_ARCH_LIST=9.0 PYTHONUNBUFFERED=1
MIN=${MIN:-6.8}
nvidia-smi -L
pip install -q -e . --no-deps --no-build-isolation 2>&1 | tail -2
t0=$(date +%s)
timeout 170 python -m pytest -q -p no:cacheprovider tests/cuda 2>&1 | tee $OUT/tests.txt | tail -15
echo "tests: $(( $(date +%s) - t0 )) s"
L="--clean-share 0.25 --low-noise-share 0.35 --loss smape-satbias --satbias-weight 0.05"
C="--out runs/s17 --clean .gpu5/train --val .gpu4/val8w --val-images 8 --profiles .gpu4/noiseprofiles.json --val-every 1000 --ckpt-every 1000 --threads 4 --backend cuda --minutes $MIN"
python tools/train_variants.py $C --steps 40000 --resume --variant "bayer:proj-scratch:--guide-proj --warmup 1000 $L" > $OUT/trainA.txt 2>&1 &
python tools/train_variants.py $C --steps 10000 --lr 3e-4 --resume \
   --variant "bayer:proj-ft:--init kpnt/weights/bayer.safetensors --guide-proj --revive-dead-guide --warmup 500 $L" > $OUT/trainB.txt 2>&1 &
wait
cat $OUT/trainA.txt $OUT/trainB.txt
for r in runs/s17/*.log; do echo "== $r"; grep -E "step|val|error|Error" $r | tail -12; done
for d in runs/s17/*/; do n=$(basename $d); tar cf $OUT/$n.tar --exclude=curve.png $d runs/s17/$n.log; done
ls -la $OUT
