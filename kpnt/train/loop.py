"""The training loop: one loss, one backward through every weight set, one
Adam step (DESIGN.md section 4), with checkpoints that resume exactly.

Determinism: every random draw of the data pipeline comes from one
``torch.Generator`` whose state is saved in the checkpoint together with the
model, the optimiser and the history, so ``--resume`` continues to the same
weights an uninterrupted run reaches.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from kpnt.errors import KpntError
from kpnt.mosaic import CFA
from kpnt.train.loss import LOSSES, psnr_linear
from kpnt.train.plot import write_curve
from kpnt.train.synthesis import Batch

log = logging.getLogger("kpnt.train")

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "weights.safetensors"
CURVE_NAME = "curve.png"
HISTORY_NAME = "history.json"


@dataclass
class TrainConfig:
    """Optimisation settings (architecture lives in ``ModelConfig``)."""

    steps: int = 2000
    lr: float = 1e-3
    #: cosine decay of the learning rate to this fraction at the last step
    lr_final: float = 0.1
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    loss: str = "smape"
    seed: int = 0
    val_every: int = 100
    ckpt_every: int = 200
    #: border pixels (per side) left out of the loss: they see padding
    loss_border: int = 4
    #: stop after this many minutes of training (None: run all steps)
    minutes: float | None = None

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise KpntError(f"unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}")


@dataclass
class History:
    steps: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    val_steps: list = field(default_factory=list)
    val_psnr: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (step, reason)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Cosine decay from ``lr`` to ``lr * lr_final`` over ``steps``."""
    t = min(step / max(cfg.steps, 1), 1.0)
    return cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def validate(model, batches: list[Batch]) -> float:
    """Mean per-image linear PSNR (white-balanced, peak 1, 6-px border)."""
    scores = []
    for b in batches:
        out = model(b.x, b.cfa, b.noise)
        scores.append(psnr_linear(out, b.target))
    return float(torch.cat(scores).mean())


def canonical_cfa(sensor: str) -> CFA | None:
    """The CFA recorded in weight metadata for a sensor kind."""
    return {"bayer": CFA.bayer("RGGB"), "xtrans": CFA.xtrans()}.get(sensor)


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _finite_grads(params) -> bool:
    return all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)


class Trainer:
    """Owns model, optimiser, data generator and history for one run folder."""

    def __init__(self, model, cfg: TrainConfig, source: Callable[[torch.Generator], Batch], val_batches: list[Batch], out_dir: Path, provenance: dict):
        self.model, self.cfg, self.source, self.val_batches = model, cfg, source, val_batches
        self.out_dir = Path(out_dir)
        self.provenance = provenance
        self.params = [p for ps in model.weight_sets().values() for p in ps]
        self.optim = torch.optim.Adam(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.step = 0
        self.history = History()
        self.loss_fn = LOSSES[cfg.loss]

    # -- checkpoints -----------------------------------------------------
    def save_checkpoint(self) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / CHECKPOINT_NAME
        _atomic_torch_save(
            {
                "step": self.step,
                "model": self.model.state_dict(),
                "optim": self.optim.state_dict(),
                "gen": self.gen.get_state(),
                "history": asdict(self.history),
                "train_config": asdict(self.cfg),
                "sensor": self.model.sensor,
                "model_config": self.model.config.to_json(),
            },
            path,
        )
        return path

    def load_checkpoint(self, path: Path) -> None:
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # corrupt or foreign file: one line for the user
            raise KpntError(f"{path}: cannot read checkpoint ({type(exc).__name__}): start without --resume") from exc
        if state.get("sensor") != self.model.sensor or state.get("model_config") != self.model.config.to_json():
            raise KpntError(f"{path}: checkpoint is for sensor {state.get('sensor')!r} with another architecture: resume with the same --sensor and model options")
        self.model.load_state_dict(state["model"])
        self.optim.load_state_dict(state["optim"])
        self.gen.set_state(state["gen"])
        self.step = int(state["step"])
        self.history = History(**state["history"])

    # -- one step --------------------------------------------------------
    def train_step(self) -> float | None:
        """One optimisation step; returns the loss, or None when the step
        was skipped for a non-finite loss or gradient (nothing updated)."""
        for g in self.optim.param_groups:
            g["lr"] = learning_rate(self.cfg, self.step)
        batch = self.source(self.gen)
        self.optim.zero_grad(set_to_none=True)
        out = self.model(batch.x, batch.cfa, batch.noise)
        loss = self.loss_fn(out, batch.target, batch.valid, self.cfg.loss_border)
        reason = None
        if not torch.isfinite(loss):
            reason = f"loss is {loss.item()}"
        else:
            loss.backward()
            if not _finite_grads(self.params):
                reason = "non-finite gradient"
        self.step += 1
        if reason is not None:
            self.optim.zero_grad(set_to_none=True)
            self.history.skipped.append((self.step, reason))
            log.warning("step %d skipped: %s (input or numerics broke; %d skipped so far)", self.step, reason, len(self.history.skipped))
            return None
        if self.cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.optim.step()
        return loss.item()

    # -- the run -----------------------------------------------------------
    def run(self, progress: bool = True, until: int | None = None) -> History:
        """Train to ``cfg.steps`` (or stop early at step ``until``, as an
        interruption would, leaving a checkpoint to resume from)."""
        cfg = self.cfg
        last_step = cfg.steps if until is None else min(until, cfg.steps)
        start = time.monotonic()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not progress, dynamic_ncols=True)
        last_val = self.history.val_psnr[-1] if self.history.val_psnr else float("nan")
        while self.step < last_step:
            loss = self.train_step()
            if loss is not None:
                self.history.steps.append(self.step)
                self.history.losses.append(loss)
            if self.val_batches and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                last_val = validate(self.model, self.val_batches)
                self.history.val_steps.append(self.step)
                self.history.val_psnr.append(last_val)
                if not progress:  # without a bar, log each validation instead
                    recent = self.history.losses[-cfg.val_every :]
                    log.info("step %d: loss %.4f, validation PSNR %.2f dB, %.1f min", self.step, sum(recent) / max(len(recent), 1), last_val, (time.monotonic() - start) / 60)
            if self.step % cfg.ckpt_every == 0:
                self.save_checkpoint()
                self.write_reports()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}" if loss is not None else "skip", val_psnr=f"{last_val:.2f}", skipped=len(self.history.skipped))
            if cfg.minutes is not None and time.monotonic() - start > cfg.minutes * 60:
                log.info("time budget of %.1f min reached at step %d", cfg.minutes, self.step)
                break
        bar.close()
        if self.val_batches and (not self.history.val_steps or self.history.val_steps[-1] != self.step):
            self.history.val_steps.append(self.step)
            self.history.val_psnr.append(validate(self.model, self.val_batches))
        self.save_checkpoint()
        self.write_reports()
        return self.history

    def write_reports(self) -> None:
        """Weights (safetensors with provenance), curve PNG and history JSON."""
        from kpnt.weights_io import save_weights

        self.out_dir.mkdir(parents=True, exist_ok=True)
        for p in self.params:
            if not torch.isfinite(p).all():
                raise KpntError("weights became non-finite: lower --lr or enable --grad-clip")
        prov = dict(self.provenance)
        prov.update(
            steps=self.step,
            skipped_steps=len(self.history.skipped),
            val_psnr_linear=self.history.val_psnr[-1] if self.history.val_psnr else None,
            train_config=asdict(self.cfg),
        )
        save_weights(self.out_dir / WEIGHTS_NAME, self.model, canonical_cfa(self.model.sensor), prov)
        h = self.history
        write_curve(self.out_dir / CURVE_NAME, h.steps, h.losses, h.val_steps, h.val_psnr, title=f"kpnt {self.model.sensor}: step {self.step}")
        tmp = self.out_dir / f".{HISTORY_NAME}.tmp"
        tmp.write_text(json.dumps(asdict(h)))
        os.replace(tmp, self.out_dir / HISTORY_NAME)
