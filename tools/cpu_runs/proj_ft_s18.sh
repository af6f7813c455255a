#!/bin/bash
# session 18 CPU A/B: fine-tune the shipped Bayer file, residual guide (ctrl) vs projection blocks + revived channels (proj)
# Run from the repository root after making .gpu5/train (tools/pack_photos.py, both halves) and .gpu4/val8w (docs/QUALITY.md); outputs in runs/s18.
mkdir -p runs/s18
C=(--sensor bayer --clean .gpu5/train --val .gpu4/val8w --val-images 4 --downscale 1 --profiles .gpu4/noiseprofiles.json
   --camera all --isos 100-409600 --val-isos 800,3200,12800 --batch 8 --tile 128 --seed 5 --clean-share 0.25 --low-noise-share 0.35
   --holdout "Nikon D750" --holdout "Sony ILCE-7M2" --holdout "Fujifilm X-T1" --holdout "Fujifilm X-E2"
   --loss smape-satbias --satbias-weight 0.05 --init kpnt/weights/bayer.safetensors --lr 2e-4 --warmup 150 --no-progress
   --steps 2800 --minutes 118 --val-every 700 --ckpt-every 350 --threads 1)
.venv/bin/kpnt-train "${C[@]}" -o runs/s18/ctrl > runs/s18/ctrl.log 2>&1 &
.venv/bin/kpnt-train "${C[@]}" --guide-proj --revive-dead-guide -o runs/s18/proj > runs/s18/proj.log 2>&1 &
wait
