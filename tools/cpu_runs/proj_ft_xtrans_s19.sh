#!/bin/bash
# NOTE: the shipped X-Trans file here is the one before session 19 shipped its own (commit 57c699a); to rerun this as it ran,
#       first: git checkout 57c699a -- kpnt/weights   (and git checkout HEAD -- kpnt/weights afterwards).
# session 19 CPU A/B on X-Trans (session 18's Bayer A/B, tools/cpu_runs/proj_ft_s18.sh, with the shipped X-Trans loss):
# fine-tune the shipped X-Trans file, residual guide (ctrl) vs projection blocks + revived channels (proj).
# Run from the repository root after making .gpu5/train and .gpu4/val8w (docs/QUALITY.md); outputs in runs/s19.
mkdir -p runs/s19
C=(--sensor xtrans --clean .gpu5/train --val .gpu4/val8w --val-images 4 --downscale 1 --profiles .gpu4/noiseprofiles.json
   --camera all --isos 100-409600 --val-isos 800,3200,12800 --batch 8 --tile 128 --seed 5 --clean-share 0.25 --low-noise-share 0.35
   --holdout "Nikon D750" --holdout "Sony ILCE-7M2" --holdout "Fujifilm X-T1" --holdout "Fujifilm X-E2"
   --loss smape-lowpass-satbias --init kpnt/weights/xtrans.safetensors --lr 2e-4 --warmup 150 --no-progress
   --steps 2800 --minutes 110 --val-every 700 --ckpt-every 350 --threads 1)
.venv/bin/kpnt-train "${C[@]}" -o runs/s19/ctrl > runs/s19/ctrl.log 2>&1 &
.venv/bin/kpnt-train "${C[@]}" --guide-proj --revive-dead-guide -o runs/s19/proj > runs/s19/proj.log 2>&1 &
wait
