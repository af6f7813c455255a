"""Data-parallel training over several processes (DESIGN.md section 6).

One process per device (NCCL on GPUs, gloo on the CPU), started by
``torchrun`` or by ``kpnt-train --devices``/``--nproc`` (:func:`launch`).

Determinism: the global batch of a step is ``S`` *shards* (``S`` = the
number of processes unless ``--shards`` says otherwise).  Shard ``s`` is
drawn from its own ``torch.Generator`` seeded from ``(seed, s)``
(:func:`shard_seed`), and process ``r`` of ``W`` owns the contiguous shards
``r*S/W .. (r+1)*S/W - 1`` (:func:`local_shards`).  The loss of a step is
the mean of the ``S`` shard losses, so its gradient is the mean of the
shard gradients, whichever process computed them: one process with
``--shards 2`` sees the same data and reaches the same weights (up to the
order of float additions) as two processes.

Gradients are averaged before the Adam step by :class:`DDPSync` (torch
``DistributedDataParallel``, the default: it all-reduces gradient buckets
while the backward pass still runs) or :class:`AllReduceSync` (one
all-reduce of all gradients, flattened, after the backward pass).  The
model's CFA argument is a plain Python object that DDP hands through
untouched, so nothing forces the fallback; ``tools/bench_ddp.py`` times
both.
"""
from __future__ import annotations

import gc
import logging
import os
import sys
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from kpnt.errors import KpntError


GRAD_SYNCS = ("ddp", "allreduce")


# -- shards -----------------------------------------------------------------
def shard_seed(seed: int, shard: int, step: int | None = None) -> int:
    """Seed of shard ``shard``'s data generator.

    Shard 0 uses ``seed`` itself, so a one-shard run draws exactly what
    single-process training always drew (and old checkpoints still match).
    Other shards (and shards created when a resumed run is re-sharded at
    ``step``) get a 63-bit seed mixed from all inputs by numpy's
    ``SeedSequence``, so no two (seed, shard) pairs share a stream.
    """
    if shard == 0 and step is None:
        return int(seed)
    entropy = [int(seed), int(shard)] + ([] if step is None else [int(step) + 1])
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def local_shards(shards: int, rank: int, world_size: int) -> range:
    """The shards process ``rank`` of ``world_size`` draws and trains on."""
    if shards < 1:
        raise KpntError(f"--shards must be >= 1, got {shards}")
    if shards % world_size:
        raise KpntError(f"{shards} shard(s) cannot be split over {world_size} processes: use a multiple of {world_size} for --shards")
    per = shards // world_size
    return range(rank * per, (rank + 1) * per)


# -- the process group --------------------------------------------------------
@dataclass
class DistContext:
    """Where this process sits in the job; a world of one needs no process
    group, and then every collective below returns its input.

    Attributes:
        rank, world_size: global rank and number of processes.
        local_rank, local_world_size: the same on this host.
        device: the device this process trains on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0 writes checkpoints, weights, curves and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all processes, in place; returns ``t``."""
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any: decisions that
        end the loop must be the same everywhere, or the others would wait
        forever in the next collective."""
        if not self.distributed:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def all_gather_object(self, obj) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every process."""
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def in_torchrun() -> bool:
    """True inside a process started by torchrun (or ``kpnt-train --nproc``)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def parse_devices(spec: str) -> list[torch.device]:
    """``--devices`` to a device list: 'auto' (cuda:0 when CUDA is usable,
    else the CPU), 'cpu', 'cuda', or a comma list like 'cuda:0,cuda:1'.

    A listed GPU must exist, and may appear once (NCCL needs one process per
    GPU); 'cpu' may repeat ('cpu,cpu' is two CPU processes, like --nproc 2).
    """
    names = [s.strip() for s in spec.split(",") if s.strip()]
    if not names:
        raise KpntError(f"--devices {spec!r}: expected e.g. 'cuda:0,cuda:1', 'cpu' or 'auto'")
    if names == ["auto"]:
        return [torch.device("cuda:0" if torch.cuda.is_available() else "cpu")]
    out = []
    for name in names:
        try:
            dev = torch.device(name)
        except RuntimeError:
            raise KpntError(f"--devices: {name!r} is not a device: use 'cpu' or 'cuda:N'") from None
        if dev.type == "cuda":
            if not torch.cuda.is_available():
                raise KpntError(f"--devices {name}: this torch build or machine has no usable CUDA GPU: use --devices cpu")
            dev = torch.device("cuda", 0 if dev.index is None else dev.index)
            if dev.index >= torch.cuda.device_count():
                raise KpntError(f"--devices {name}: only {torch.cuda.device_count()} GPU(s) visible (cuda:0..cuda:{torch.cuda.device_count() - 1})")
            if dev in out:
                raise KpntError(f"--devices lists {name} twice: give each process its own GPU")
        elif dev.type != "cpu":
            raise KpntError(f"--devices: {name!r}: only 'cpu' and 'cuda:N' are supported")
        out.append(dev)
    if len({d.type for d in out}) > 1:
        raise KpntError(f"--devices {spec!r} mixes CPU and GPU processes: list only GPUs or only 'cpu'")
    return out


def init_from_env(devices: list[torch.device] | None) -> DistContext:
    """Join the process group torchrun described in the environment.

    The process trains on ``devices[LOCAL_RANK]`` (the list must have one
    entry per process on this host), or without a list on ``cuda:LOCAL_RANK``
    when CUDA is usable, else the CPU.  Backend: NCCL for GPUs, gloo for
    the CPU.
    """
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local_rank = int(os.environ["LOCAL_RANK"])
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except (KeyError, ValueError) as exc:
        raise KpntError(f"torchrun environment is incomplete ({exc}): start with torchrun or kpnt-train --nproc/--devices") from None
    if devices is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    elif len(devices) == 1 and devices[0].type == "cpu":
        device = devices[0]  # 'cpu' for every process
    elif len(devices) != local_world:
        raise KpntError(f"--devices lists {len(devices)} device(s) for {local_world} processes on this host: list one per process")
    else:
        device = devices[local_rank]
    ctx = DistContext(rank, world, local_rank, local_world, device)
    if world > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world, device_id=device if device.type == "cuda" else None)
    return ctx


def shutdown(ctx: DistContext, wait: bool = True) -> None:
    """Leave the process group (if one was joined).

    ``wait``: after success, leave together (a barrier first): a process
    that tears down its connections while a peer still uses them can make
    the peer abort.  After a failure don't: the others may be inside another
    collective, and the launcher stops them once this process has exited.
    """
    if ctx.distributed and dist.is_initialized():
        # A DistributedDataParallel wrapper holds the process group, and a
        # finished Trainer sits in reference cycles that only the garbage
        # collector frees.  Left to the collector at interpreter exit, the
        # group's last reference goes then, and gloo's worker threads free
        # tensors (taking the GIL) while the interpreter is being torn down:
        # the process aborts with "terminate called without an active
        # exception" after a successful run (tests/test_distributed.py, in
        # full-suite runs of sessions 10, 11 and 14; rare; the likely cause,
        # not a reproduced one).  Collect now, so destroy_process_group below
        # is the group's end, with the interpreter whole.
        gc.collect()
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()


# -- gradient averaging ---------------------------------------------------------
class LocalSync:
    """One process: the shard losses are averaged locally, nothing to sync."""

    def __init__(self, model: torch.nn.Module, ctx: DistContext):
        self.net = model
        self.ctx = ctx

    def loss_weight(self, shards: int) -> float:
        """Factor of each local shard loss so that the synced gradient is the
        mean over all ``shards``."""
        return 1.0 / shards

    def accumulate(self, last: bool):
        """Context for the backward of one local shard (``last``: the final one)."""
        return nullcontext()

    def finish(self, params: list[torch.Tensor]) -> None:
        """Called after the last local backward: complete the averaging."""


class DDPSync(LocalSync):
    """``DistributedDataParallel``: buckets of gradients are all-reduced
    (averaged over processes) while the backward pass is still running;
    local shards before the last accumulate under ``no_sync``."""

    def __init__(self, model, ctx):
        super().__init__(model, ctx)
        device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        # Every weight set takes part in every forward (all site classes
        # occur in every CFA phase), so no unused-parameter search is needed.
        self.net = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    def loss_weight(self, shards):
        # DDP divides the summed gradients by the number of processes.
        return self.ctx.world_size / shards

    def accumulate(self, last):
        return nullcontext() if last else self.net.no_sync()


class AllReduceSync(LocalSync):
    """All gradients flattened into one buffer and summed in one all-reduce
    after the backward pass (no overlap with it, one collective per step)."""

    def finish(self, params):
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        self.ctx.all_reduce_sum(flat)
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p)
            offset += n


def make_sync(kind: str, model: torch.nn.Module, ctx: DistContext) -> LocalSync:
    """The gradient averaging for ``kind`` ('ddp' or 'allreduce')."""
    if kind not in GRAD_SYNCS:
        raise KpntError(f"unknown gradient sync {kind!r}: choose one of {', '.join(GRAD_SYNCS)}")
    if not ctx.distributed:
        return LocalSync(model, ctx)
    return (DDPSync if kind == "ddp" else AllReduceSync)(model, ctx)


# -- the launcher -----------------------------------------------------------------
def launch(nproc: int, argv: list[str], verbose: bool = False) -> int:
    """Run ``python -m kpnt.train ARGV`` in ``nproc`` processes on this host,
    as ``torchrun --standalone --nproc-per-node NPROC -m kpnt.train ARGV``
    would (same API, in-process agent, no restarts).

    Each worker prints its own one-line errors; returns 0 when all succeed,
    else 1 after one line naming the failed ranks.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if not verbose:
        # The elastic agent logs rendezvous details and, on a failure, a long
        # report; each worker already said what went wrong in one line.
        logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    env_threads = os.environ.get("OMP_NUM_THREADS")
    if env_threads is None and nproc > 1:
        # CPU threads per process: share the cores instead of oversubscribing
        # them nproc times over (torchrun sets 1; a share is faster here).
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=str(uuid.uuid4()),
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn",
    )
    try:
        elastic_launch(config, sys.executable)("-m", "kpnt.train", *argv)
    except ChildFailedError as exc:
        failed = sorted(exc.failures)
        codes = sorted({f.exitcode for f in exc.failures.values()})
        print(f"kpnt-train: error: process(es) of rank {', '.join(map(str, failed))} of {nproc} failed (exit code {', '.join(map(str, codes))}); see their errors above", file=sys.stderr)
        return 1
    finally:
        if env_threads is None and nproc > 1:
            os.environ.pop("OMP_NUM_THREADS", None)
    return 0
