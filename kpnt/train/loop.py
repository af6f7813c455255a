"""The training loop: one loss, one backward through every weight set, one
Adam step (DESIGN.md section 4), with checkpoints that resume exactly.

Determinism: the global batch of a step is ``S`` shards (default: one per
process, see :mod:`kpnt.train.distributed`); every random draw of shard
``s`` comes from its own ``torch.Generator`` seeded from ``(seed, s)``.  The
states of all ``S`` generators are saved in the checkpoint together with the
model, the optimiser and the history, so ``--resume`` continues to the same
weights an uninterrupted run reaches, also with another number of processes
as long as it divides ``S`` (then only the order of float additions in the
gradient average differs).
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from kpnt.errors import KpntError
from kpnt.io.atomic import atomic_file
from kpnt.mosaic import CFA, kinds
from kpnt.mosaic.cfa import reference_cfa
from kpnt.train.distributed import GRAD_SYNCS, DistContext, local_shards, make_sync, shard_seed
from kpnt.train.loss import LOSSES, SATBIAS_WEIGHT, loss_function, psnr_linear
from kpnt.train.step import apply_update, nonfinite_grads, step_loss
from kpnt.train.plot import write_curve
from kpnt.train.synthesis import Batch

log = logging.getLogger("kpnt.train")

CHECKPOINT_NAME = "checkpoint.pt"
WEIGHTS_NAME = "weights.safetensors"
#: The weights at the best validation PSNR so far (a long fine-tuning run
#: may end below its best: session 11's 40000-step stage peaked at step
#: 35000 and ended 0.5 dB lower).
BEST_NAME = "best.safetensors"
CURVE_NAME = "curve.png"
HISTORY_NAME = "history.json"


@dataclass
class TrainConfig:
    """Optimisation settings (architecture lives in ``ModelConfig``)."""

    steps: int = 2000
    lr: float = 1e-3
    #: cosine decay of the learning rate to this fraction at the last step
    lr_final: float = 0.1
    #: steps of linear warm-up from ``lr / warmup`` (0: none).  A run that
    #: starts from trained weights (``--init``) needs it: Adam's first steps
    #: move every weight by about ``lr`` whatever its gradient, which knocks
    #: a trained model off its optimum before the moment estimates settle.
    warmup: int = 0
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    #: Adam's epsilon.  Adam steps by m / (sqrt(v) + eps); kpnt's gradients
    #: are ~1e-7 (a mean loss over millions of photosites), so the default
    #: 1e-8 hardly bounds a step whose v has decayed.  A larger eps caps
    #: the step of weights whose gradients were tiny for a long while (the
    #: suspect in the late upsets of sessions 11 and 14; docs/QUALITY.md).
    adam_eps: float = 1e-8
    loss: str = "smape"
    #: weight of the saturated-bias term of the ``*-satbias`` losses
    satbias_weight: float = SATBIAS_WEIGHT
    seed: int = 0
    val_every: int = 100
    ckpt_every: int = 200
    #: border pixels (per side) left out of the loss: they see padding
    loss_border: int = 4
    #: stop after this many minutes of training (None: run all steps)
    minutes: float | None = None
    #: with ``minutes``: the cosine schedule also runs on the clock, its
    #: progress the larger of step / ``steps`` and the share of the time
    #: budget used, so a run that ``minutes`` stops still ends at the low
    #: learning rate (a fixed step count must otherwise guess the speed of
    #: a GPU it has not seen).  On resume the schedule's remaining part is
    #: spread over the new budget.
    anneal_by_time: bool = False
    #: shards of the global batch, each from its own generator (None: one
    #: per process for a new run, the checkpoint's number on resume)
    shards: int | None = None
    #: how gradients are averaged over processes: 'ddp' or 'allreduce'
    grad_sync: str = "ddp"
    #: capture the step as CUDA graphs (one process, fused kernels on a GPU)
    cuda_graphs: bool = True

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise KpntError(f"unknown loss {self.loss!r}: choose one of {', '.join(LOSSES)}")
        if self.shards is not None and self.shards < 1:
            raise KpntError(f"--shards must be >= 1, got {self.shards}")
        if self.grad_sync not in GRAD_SYNCS:
            raise KpntError(f"unknown gradient sync {self.grad_sync!r}: choose one of {', '.join(GRAD_SYNCS)}")
        if self.anneal_by_time and self.minutes is None:
            raise KpntError("annealing by time needs a time budget: pass --minutes too")


@dataclass
class History:
    steps: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    val_steps: list = field(default_factory=list)
    val_psnr: list = field(default_factory=list)
    skipped: list = field(default_factory=list)  # (step, reason)


def learning_rate(cfg: TrainConfig, step: int, time_progress: float = 0.0) -> float:
    """Cosine decay from ``lr`` to ``lr * lr_final`` over ``steps``, after a
    linear warm-up over the first ``warmup`` steps.  ``time_progress``
    (0..1, ``TrainConfig.anneal_by_time``): the share of the time budget
    used; the schedule is as far along as the larger of the two."""
    t = min(max(step / max(cfg.steps, 1), time_progress), 1.0)
    ramp = min(1.0, (step + 1) / cfg.warmup) if cfg.warmup > 0 else 1.0
    return ramp * cfg.lr * (cfg.lr_final + (1 - cfg.lr_final) * 0.5 * (1 + math.cos(math.pi * t)))


@torch.no_grad()
def validate(model, batches: list[Batch], ctx: DistContext | None = None) -> float:
    """Mean per-image linear PSNR (white-balanced, peak 1, 6-px border).

    With several processes each validates every ``world_size``-th batch and
    the sums are all-reduced, so all of them return the same mean.
    """
    ctx = ctx or DistContext()
    device = next(model.parameters()).device
    total = torch.zeros(2, dtype=torch.float64, device=device)  # sum of PSNRs, images
    for b in batches[ctx.rank :: ctx.world_size]:
        b = batch_to(b, device)
        scores = psnr_linear(model(b.x, b.cfa, b.noise), b.target)
        total += torch.stack([scores.double().sum(), torch.tensor(float(scores.numel()), dtype=torch.float64, device=device)])
    ctx.all_reduce_sum(total)
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def batch_to(batch: Batch, device: torch.device) -> Batch:
    """The batch with its tensors on ``device`` (synthesis runs on the CPU)."""
    if batch.x.device == device:
        return batch
    moved = {k: getattr(batch, k).to(device, non_blocking=True) for k in ("x", "target", "noise", "valid")}
    return replace(batch, wb=None if batch.wb is None else batch.wb.to(device), **moved)


def canonical_cfa(sensor: str) -> CFA | None:
    """The CFA recorded in weight metadata for a sensor kind."""
    return None if sensor == kinds.RGB else reference_cfa(sensor)


def _atomic_torch_save(obj, path: Path) -> None:
    with atomic_file(path) as fh:
        torch.save(obj, fh)


class Trainer:
    """Owns model, optimiser, data generators and history for one run folder.

    Args:
        model: a :class:`~kpnt.model.KPNT`; moved to ``ctx.device``.
        cfg: optimisation settings.
        source: ``source(gen) -> Batch`` draws one shard's batch (on the
            CPU) with every random choice taken from ``gen``.
        val_batches: fixed validation batches.
        out_dir: run folder (written by rank 0 only).
        provenance: recorded in the weights file.
        ctx: this process's place in a data-parallel job (default: alone,
            on the model's device).
    """

    def __init__(self, model, cfg: TrainConfig, source: Callable[[torch.Generator], Batch], val_batches: list[Batch], out_dir: Path, provenance: dict, ctx: DistContext | None = None):
        self.ctx = ctx or DistContext(device=next(model.parameters()).device)
        self.model = model.to(self.ctx.device)
        self.cfg, self.source, self.val_batches = cfg, source, val_batches
        self.out_dir = Path(out_dir)
        self.provenance = provenance
        self.params = [p for ps in model.weight_sets().values() for p in ps]
        self.step = 0
        self.history = History()
        # anneal_by_time: the share of the schedule's time reached when this
        # process began (a resumed run's, from its checkpoint) and now.
        self._time_base = 0.0
        self._time_progress = 0.0
        self.loss_fn = loss_function(cfg.loss, cfg.satbias_weight)
        border = cfg.loss_border
        #: (output, target, valid) -> loss, as every step variant calls it (kpnt.train.step).
        self.step_loss_fn = lambda o, t, v: self.loss_fn(o, t, v, border)
        self._set_shards(cfg.shards or self.ctx.world_size)
        self.gens = {s: torch.Generator().manual_seed(shard_seed(cfg.seed, s)) for s in self.local}
        # One process, one shard, fused kernels on a GPU: the whole step
        # (forward, loss, backward, finite check, clipping, Adam) replays as
        # a CUDA graph, which removes the host launch overhead that otherwise
        # dominates (kpnt/train/graph_step.py).  Data parallelism keeps the
        # eager step: its gradient all-reduce is not inside the graph.
        use_graphs = (
            cfg.cuda_graphs
            and self.ctx.device.type == "cuda"
            and self.ctx.world_size == 1
            and self.shards == 1
            and getattr(model, "backend", "torch") in ("cuda", "auto")
        )
        adam = dict(lr=cfg.lr, eps=cfg.adam_eps, weight_decay=cfg.weight_decay)
        self.graphed = None
        if use_graphs:
            from kpnt.train.graph_step import GraphedStep, adam_for_graphs

            self.optim = adam_for_graphs(self.params, **adam)
            self.graphed = GraphedStep(self.model, self.optim, self.step_loss_fn, cfg.grad_clip)
            log.info("training step captured as CUDA graphs (one per CFA phase)")
        else:
            self.optim = torch.optim.Adam(self.params, **adam)
        self.sync = make_sync(cfg.grad_sync, model, self.ctx)

    def _set_shards(self, shards: int) -> None:
        self.shards = shards
        self.local = local_shards(shards, self.ctx.rank, self.ctx.world_size)

    @property
    def gen(self) -> torch.Generator:
        """The generator of this process's first shard (with one shard and
        one process: the generator of all data randomness)."""
        return self.gens[self.local[0]]

    # -- checkpoints -----------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Write OUT/checkpoint.pt (rank 0; every process must call this,
        since the generator states of all shards are gathered first)."""
        states = {}
        for part in self.ctx.all_gather_object({s: g.get_state() for s, g in self.gens.items()}):
            states.update(part)
        path = self.out_dir / CHECKPOINT_NAME
        if not self.ctx.is_main:
            return path
        self.out_dir.mkdir(parents=True, exist_ok=True)
        _atomic_torch_save(
            {
                "step": self.step,
                "time_progress": self._time_progress,
                "model": self.model.state_dict(),
                "optim": self.optim.state_dict(),
                "shards": self.shards,
                "gens": [states[s] for s in range(self.shards)],
                "history": asdict(self.history),
                "train_config": asdict(self.cfg),
                "sensor": self.model.sensor,
                "model_config": self.model.config.to_json(),
            },
            path,
        )
        return path

    def _same_architecture(self, saved) -> bool:
        """Whether a checkpoint's model config is this model's, compared as
        configs: keys added to ModelConfig since (e.g. guide_pack) take
        their defaults, as they do for weights files."""
        from kpnt.model import ModelConfig

        try:
            return ModelConfig.from_json(dict(saved)) == self.model.config
        except (TypeError, ValueError):
            return False

    def load_checkpoint(self, path: Path) -> None:
        """Continue from a checkpoint (every process reads it).

        The run keeps the checkpoint's number of shards unless
        ``cfg.shards`` asks for another: then shards that existed keep their
        generators, new ones start from seeds mixed with the step, and the
        data stream (not the model or optimiser state) departs from an
        uninterrupted run's.
        """
        try:
            state = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # corrupt or foreign file: one line for the user
            raise KpntError(f"{path}: cannot read checkpoint ({type(exc).__name__}): it is damaged or not a kpnt checkpoint; "
                            f"start over with --restart (keeps it as {path.name}.old) or delete it") from exc
        if state.get("sensor") != self.model.sensor or not self._same_architecture(state.get("model_config")):
            raise KpntError(f"{path}: checkpoint is for sensor {state.get('sensor')!r} with another architecture: resume with the same --sensor and model options")
        # Checkpoints before sharding hold one generator state under "gen".
        saved = state["gens"] if "gens" in state else [state["gen"]]
        step = int(state["step"])
        if self.cfg.shards is None:
            if len(saved) % self.ctx.world_size:
                raise KpntError(f"{path}: the run has {len(saved)} shard(s), which {self.ctx.world_size} processes cannot split: "
                                f"use a number of processes that divides {len(saved)}, or pass --shards to re-shard (changes the data stream)")
            self._set_shards(len(saved))
        elif self.cfg.shards != len(saved) and self.ctx.is_main:
            log.warning("re-sharding the run from %d to %d shards at step %d: the data stream differs from an uninterrupted run's from here on",
                        len(saved), self.cfg.shards, step)
        self.model.load_state_dict(state["model"])
        flags = [(g.get("capturable", False), g.get("fused")) for g in self.optim.param_groups]
        self.optim.load_state_dict(state["optim"])
        for g, (capturable, fused) in zip(self.optim.param_groups, flags):
            # A run checkpointed by the graphed GPU step (capturable, fused
            # Adam) may resume on a CPU, and the other way round: the flags
            # are this run's, not the checkpoint's.  So is Adam's eps
            # (--adam-eps may change on --resume).
            g["capturable"], g["fused"] = capturable, fused
            g["eps"] = self.cfg.adam_eps
        if self.graphed is not None:
            self.graphed.reset()  # the graphs captured the old optimiser state
        self.gens = {}
        for s in self.local:
            g = torch.Generator()
            if s < len(saved):
                g.set_state(saved[s])
            else:
                g.manual_seed(shard_seed(self.cfg.seed, s, step))
            self.gens[s] = g
        self.step = step
        self.history = History(**state["history"])
        self._time_base = self._time_progress = float(state.get("time_progress", 0.0))

    # -- one step --------------------------------------------------------
    def train_step(self) -> float | None:
        """One optimisation step on the global batch (all shards); returns
        the mean shard loss, or None when the step was skipped for a
        non-finite loss or gradient on any shard (nothing updated, and the
        same decision on every process)."""
        if self.graphed is not None:
            return self._graphed_step()
        for g in self.optim.param_groups:
            g["lr"] = self._learning_rate()
        self.optim.zero_grad(set_to_none=True)
        weight = self.sync.loss_weight(self.shards)
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.ctx.device)
        for i, s in enumerate(self.local):
            batch = batch_to(self.source(self.gens[s]), self.ctx.device)
            with self.sync.accumulate(last=i == len(self.local) - 1):
                loss = step_loss(self.sync.net, self.step_loss_fn, batch.x, batch.cfa, batch.noise, batch.target,
                                 batch.valid)
                # Backward even for a non-finite loss: under DDP every process
                # must join every gradient all-reduce; the NaN gradients that
                # result are thrown away below.
                (loss * weight if weight != 1.0 else loss).backward()
            loss_sum += loss.detach().double()
        self.sync.finish(self.params)
        # One all-reduce decides for all processes: the global mean loss, and
        # how many gradients are non-finite anywhere.
        stats = torch.stack([loss_sum, nonfinite_grads(self.params).to(self.ctx.device)])
        total_loss, nonfinite = self.ctx.all_reduce_sum(stats).tolist()
        mean_loss = total_loss / self.shards
        self.step += 1
        reason = None
        if not math.isfinite(mean_loss):
            reason = f"loss is {mean_loss}"
        elif nonfinite > 0:
            reason = "non-finite gradient"
        if reason is not None:
            self.optim.zero_grad(set_to_none=True)
            self.history.skipped.append((self.step, reason))
            if self.ctx.is_main:
                log.warning("step %d skipped: %s (input or numerics broke; %d skipped so far)", self.step, reason, len(self.history.skipped))
            return None
        # The gradients are the same on every process, so is the clipping.
        apply_update(self.params, self.optim, self.cfg.grad_clip)
        return mean_loss

    def _graphed_step(self) -> float | None:
        """:meth:`train_step` through the captured graph: the non-finite
        skip happens inside the graph (weights and Adam state restored)."""
        self.graphed.set_lr(self._learning_rate())
        batch = batch_to(self.source(self.gens[self.local[0]]), self.ctx.device)
        loss = self.graphed(batch).result()
        self.step += 1
        if loss is None:
            self.history.skipped.append((self.step, "non-finite loss or gradient"))
            log.warning("step %d skipped: non-finite loss or gradient (%d skipped so far)", self.step, len(self.history.skipped))
        return loss

    # -- the run -----------------------------------------------------------
    def run(self, progress: bool = True, until: int | None = None) -> History:
        """Train to ``cfg.steps`` (or stop early at step ``until``, as an
        interruption would, leaving a checkpoint to resume from).  Every
        process of a data-parallel job runs this; only rank 0 shows
        progress and writes files."""
        cfg = self.cfg
        main = self.ctx.is_main
        last_step = cfg.steps if until is None else min(until, cfg.steps)
        start = time.monotonic()
        bar = tqdm(total=cfg.steps, initial=self.step, desc="train", unit="step", disable=not (progress and main), dynamic_ncols=True)
        last_val = self.history.val_psnr[-1] if self.history.val_psnr else float("nan")
        while self.step < last_step:
            if cfg.anneal_by_time:
                self._advance_time_progress(time.monotonic() - start)
            loss = self.train_step()
            if loss is not None:
                self.history.steps.append(self.step)
                self.history.losses.append(loss)
            if self.val_batches and (self.step % cfg.val_every == 0 or self.step == cfg.steps):
                last_val = validate(self.model, self.val_batches, self.ctx)
                self._record_validation(last_val)
                if not progress and main:  # without a bar, log each validation instead
                    recent = self.history.losses[-cfg.val_every :]
                    log.info("step %d: loss %.4f, validation PSNR %.2f dB, %.1f min", self.step, sum(recent) / max(len(recent), 1), last_val, (time.monotonic() - start) / 60)
            if self.step % cfg.ckpt_every == 0:
                self.save_checkpoint()
                self.write_reports()
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}" if loss is not None else "skip", val_psnr=f"{last_val:.2f}", skipped=len(self.history.skipped))
            # Rank 0's clock decides, for all processes at once.
            if cfg.minutes is not None and self.ctx.any(main and time.monotonic() - start > cfg.minutes * 60):
                if main:
                    log.info("time budget of %.1f min reached at step %d", cfg.minutes, self.step)
                break
        bar.close()
        if self.val_batches and (not self.history.val_steps or self.history.val_steps[-1] != self.step):
            self._record_validation(validate(self.model, self.val_batches, self.ctx))
        self.save_checkpoint()
        self.write_reports()
        return self.history

    def _learning_rate(self) -> float:
        """This step's learning rate; the clock counts only with
        ``anneal_by_time`` (a run resumed without it follows its steps)."""
        return learning_rate(self.cfg, self.step, self._time_progress if self.cfg.anneal_by_time else 0.0)

    def _advance_time_progress(self, elapsed_s: float) -> None:
        """``anneal_by_time``: the schedule's time progress after
        ``elapsed_s`` seconds of this process's budget, the checkpoint's
        progress plus this budget's share of what was left.  Rank 0's clock
        decides, so every process steps with the same learning rate."""
        share = min(elapsed_s / (self.cfg.minutes * 60), 1.0)
        progress = self._time_base + (1.0 - self._time_base) * share
        if self.ctx.distributed:
            progress = self.ctx.all_gather_object(progress)[0]
        self._time_progress = progress

    def _record_validation(self, psnr: float) -> None:
        """Append a validation to the history; a new best (above every
        earlier one of the run, resumed parts included) also writes
        BEST_NAME, so the run's best weights survive a later decline."""
        h = self.history
        best_before = max((v for v in h.val_psnr if v == v), default=float("-inf"))   # NaN-free
        h.val_steps.append(self.step)
        h.val_psnr.append(psnr)
        if psnr == psnr and psnr > best_before:
            self._write_weights(BEST_NAME, best_step=self.step)

    def _write_weights(self, name: str, **extra) -> None:
        """A weights file (safetensors with provenance) in the run folder,
        by rank 0, after every process checked the weights are finite."""
        from kpnt.weights_io import save_weights

        for p in self.params:
            if not torch.isfinite(p).all():
                raise KpntError("weights became non-finite: lower --lr or enable --grad-clip")
        if not self.ctx.is_main:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        prov = dict(self.provenance)
        prov.update(
            steps=self.step,
            skipped_steps=len(self.history.skipped),
            val_psnr_linear=self.history.val_psnr[-1] if self.history.val_psnr else None,
            train_config=asdict(self.cfg),
            shards=self.shards,
            processes=self.ctx.world_size,
            **extra,
        )
        save_weights(self.out_dir / name, self.model, canonical_cfa(self.model.sensor), prov)

    def write_reports(self) -> None:
        """Weights (safetensors with provenance), curve PNG and history JSON,
        written by rank 0 (every process checks the weights first, so a
        failure stops them all alike)."""
        self._write_weights(WEIGHTS_NAME)
        if not self.ctx.is_main:
            return
        h = self.history
        write_curve(self.out_dir / CURVE_NAME, h.steps, h.losses, h.val_steps, h.val_psnr, title=f"kpnt {self.model.sensor}: step {self.step}")
        with atomic_file(self.out_dir / HISTORY_NAME) as fh:
            fh.write(json.dumps(asdict(h)).encode("utf-8"))
