#!/bin/bash
# Session 49: the training loop's overlap (kpnt.train.loop: the next batch built while a graphed step runs, each
# loss read one step late; kpnt.train.synthesis.to_device: no host synchronisation in a batch's synthesis).
# 1. its tests (CPU bookkeeping and the GPU's: no sync in synthesis, same weights read late or at once);
#    /tmp/overlap_ok is written only when they pass;
# 2. an A/B of training speed in one call: Bayer and X-Trans trained side by side (as the training calls do) for
#    $AB_S seconds each way, --no-overlap first, then the default; steps reached in the budget, from the logs.
# Run once (H100, 21:38 UTC, before the t5 training call): the GPU tests did not run (tests/cuda/test_train_overlap.py
# shared its module name with tests/test_train_overlap.py: a collection error), and the A/B found no gain: in 25 s,
# Bayer 1107 steps without the overlap and 1098 with it, X-Trans 1451 and 1465 ($OUT/overlap_ab.txt, kept as
# docs/bench/train_overlap_ab_s49_h100.txt). So the change was taken out again; `git show ca26734` has its code and tests.
# Carry .gpu5/train4/a and .gpu4 (tools/gpu_calls/s49_train.sh says how to make them).
AB_S=${AB_S:-25}
source tools/gpu_calls/preamble.sh
if tests_pass 240 tests/test_train_overlap.py tests/cuda/test_train_overlap.py tests/cuda/test_graph_step.py; then
    touch /tmp/overlap_ok; echo "overlap tests passed"; fi
mv $OUT/tests.txt $OUT/overlap_tests.txt
MIN=$(python -c "print($AB_S / 60)")
C="--clean .gpu5/train4/a --profiles .gpu4/noiseprofiles.json --camera all --isos 100-409600 --batch 16 --tile 192
   --lr 1e-5 --seed 49 --steps 400000 --val-every 100000 --ckpt-every 100000 --threads 4 --backend cuda --no-progress
   --minutes $MIN --downscale 1"
for mode in no-overlap overlap; do
    F=""; [ $mode = no-overlap ] && F=--no-overlap
    python -m kpnt.train --sensor bayer -o runs/ab49/$mode-bayer --init kpnt/weights/bayer.safetensors \
        --loss smape-satbias $C $F > runs_ab_$mode-bayer.log 2>&1 &
    python -m kpnt.train --sensor xtrans -o runs/ab49/$mode-xtrans --init kpnt/weights/xtrans.safetensors \
        --guide-dtype bfloat16 --loss smape-lowpass-satbias $C $F > runs_ab_$mode-xtrans.log 2>&1 &
    wait
done
for f in runs_ab_*.log; do echo "== $f"; grep -E "budget|rror|steps" $f | tail -3; done | tee $OUT/overlap_ab.txt
