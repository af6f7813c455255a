"""A whole training step captured in a CUDA graph.

:class:`GraphedStep` captures forward, loss, backward, the finite check,
grad-norm clipping and the Adam update into one ``torch.cuda.CUDAGraph`` per
static input (shapes, dtypes, CFA pattern).  A step then costs one
host-to-device copy of the batch into static buffers and one graph replay:
the ~400 kernel launches of the fused step no longer wait on Python.

How it is built (the recipe of the PyTorch CUDA-graph docs, whole-network
capture):

* Warm-up: a few eager steps on a side stream, so every cached index table
  (CFA class partitions, tap tables, padding folds, colour-base weights,
  detail-variance constants), the extension's kernel attributes and Adam's
  state exist before capture.  The last warm-up step runs under
  ``torch.cuda.set_sync_debug_mode("error")``: anything in the step that
  waits for the GPU (``.item()``, ``nonzero``, a host-to-device copy of a
  pageable tensor) raises there with its traceback instead of as an opaque
  capture error.  Parameters and optimiser state are restored afterwards
  (bitwise), so the warm-up leaves no trace.
* Capture into a memory pool shared by all of this object's graphs (they
  never run concurrently; each replay recomputes everything it reads, and
  the results are copied out right after the replay).  Tensors created
  outside the capture that the graph reads (cached index tables) are held
  by the graph entry, so an LRU eviction can never free memory a graph
  still reads.
* Non-finite steps are handled **inside the graph by a masked commit**:
  before Adam the parameters and Adam's state (step, moments) are copied to
  a flat backup; after Adam every one of them is set to
  ``where(finite, new, backup)``, where ``finite`` = loss finite and every
  gradient finite (the Trainer's test, taken before clipping).  A skipped
  step therefore leaves weights and Adam state bitwise unchanged, with no
  host synchronisation in the step.  With :data:`FUSED_UPDATE` (the
  default) kpnt's update kernels do the finite check, clipping and Adam in
  three kinds of launch and write nothing when the step is not finite, so
  no backup is needed (:mod:`kpnt.ops._cuda.train_update`).
* The learning rate is a 0-d device tensor in the optimiser's param group
  (captured by address): change it with :meth:`GraphedStep.set_lr`, never
  by assigning a float to ``param_groups[i]['lr']`` (that raises on the next
  step instead of silently using the captured value).

Limits: one process (no gradient all-reduce inside the graph); the model's
parameters and the optimiser's state tensors must keep their identity
(after ``load_state_dict`` on either, call :meth:`GraphedStep.reset`; a
replaced Adam state raises); ``p.grad`` after a step is not meaningful
(each graph owns its gradient buffers).

Example::

    opt = adam_for_graphs(model.parameters(), lr=1e-3)
    step = GraphedStep(model, opt, lambda o, t, v: smape(o, t, v, 4), clip=1.0)
    for batch in batches:                       # tensors on the model's GPU
        step.set_lr(lr_schedule(i))
        out = step(batch)                       # no host sync
        losses.append(out.values)               # (loss, applied) on the GPU
    print(out.result())                         # loss, or None if skipped
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from kpnt.train.step import apply_update, nonfinite_grads, step_loss

log = logging.getLogger("kpnt.train")

#: Eager warm-up steps before each capture (the PyTorch docs use 3).
WARMUP_STEPS = 3

#: Whether :func:`adam_for_graphs` makes a fused Adam (one multi-tensor
#: kernel for the whole update) rather than the capturable foreach Adam,
#: whose bias corrections with a tensor learning rate launch about two
#: kernels a parameter (session 34, H100: 162 ``aten::div_`` in
#: ``Adam.step`` for the shipped Bayer model's 81 parameters).  On since
#: session 34's second call: every CUDA test passed (the graphed step
#: against the eager one with either Adam), the graphed bf16 Bayer step
#: 616 -> 437 launches, 8.46 -> 8.17 ms of GPU time
#: (``docs/bench/graphed_callers_s34{a,b}_h100.txt``).
FUSED_ADAM = True

#: Whether a captured step's finite check, gradient clipping, Adam update and
#: masked commit run on kpnt's update kernels (:mod:`kpnt.ops._cuda.train_update`:
#: three kinds of launch, no backup of the weights and Adam state) instead of
#: PyTorch's ops (~30 kernels, most of them multi-tensor kernels that run a
#: few dozen blocks on a GPU of 132 SMs).  Optimisers the kernels cannot take
#: (:func:`kpnt.ops._cuda.train_update.unsupported`) keep PyTorch's path, logged.
FUSED_UPDATE = True


def adam_for_graphs(params, lr: float, **kwargs) -> torch.optim.Optimizer:
    """The Adam a :class:`GraphedStep` takes: capturable (its step count
    and learning rate live on the GPU), fused when :data:`FUSED_ADAM`.
    ``kwargs`` go to ``torch.optim.Adam`` (``eps``, ``weight_decay``, ...)."""
    return torch.optim.Adam(params, lr=lr, capturable=True, fused=FUSED_ADAM, **kwargs)


@dataclass
class StepOutput:
    """Result of one step, left on the GPU: ``values = [loss, applied]``
    (float32; ``applied`` is 1.0 when the update was committed, 0.0 when the
    step was skipped for a non-finite loss or gradient)."""

    values: Tensor

    @property
    def loss(self) -> Tensor:
        return self.values[0]

    @property
    def applied(self) -> Tensor:
        return self.values[1] > 0

    def result(self) -> float | None:
        """The loss as a float, or None if the step was skipped (one host sync)."""
        loss, applied = self.values.tolist()
        return loss if applied > 0 else None


class _KeepExternal(TorchDispatchMode):
    """Records every CUDA tensor an op reads that no op of the captured region
    produced: memory from outside the graph's pool that the graph reads by
    address (cached index tables and the like), to be kept alive."""

    def __init__(self):
        super().__init__()
        self.made: set[int] = set()
        self.kept: dict[int, Tensor] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        for t in tree_leaves((args, kwargs)):
            if isinstance(t, Tensor) and t.is_cuda:
                ptr = t.untyped_storage().data_ptr()
                if ptr and ptr not in self.made:
                    self.kept.setdefault(ptr, t)
        out = func(*args, **kwargs)
        for t in tree_leaves(out):
            if isinstance(t, Tensor) and t.is_cuda:
                self.made.add(t.untyped_storage().data_ptr())
        return out


@dataclass
class _Entry:
    graph: torch.cuda.CUDAGraph
    x: Tensor
    target: Tensor
    noise: Tensor
    valid: Tensor | None
    values: Tensor                      # (2,) [loss, applied], written by the graph
    keep: list = field(default_factory=list)


def _static_copy(t: Tensor | None, device) -> Tensor | None:
    return None if t is None else t.detach().to(device, copy=True)


def _batch_key(batch) -> tuple:
    def sig(t):
        return None if t is None else (tuple(t.shape), t.dtype)

    cfa = batch.cfa
    pattern = None if cfa is None else (cfa.pattern.shape, cfa.pattern.tobytes())
    return sig(batch.x), sig(batch.target), sig(batch.noise), sig(batch.valid), pattern


class GraphedStep:
    """One training step (forward, loss, backward, finite check, grad-norm
    clipping, Adam) replayed from a CUDA graph per static input.

    Args:
        model: a :class:`~kpnt.model.KPNT` (any module called as
            ``model(x, cfa, noise)``) on a CUDA device.
        optimizer: ``torch.optim.Adam(..., capturable=True)``, foreach or
            fused (:func:`adam_for_graphs` makes one), over the parameters
            to train; a float learning rate is replaced by a 0-d tensor on
            the model's device (see :meth:`set_lr`).
        loss_fn: ``loss_fn(out, target, valid) -> 0-d tensor``.
        clip: maximal global gradient norm (``<= 0``: no clipping).
        example_batch: if given, its graph is captured now (else on the first
            call).  A batch has ``x``, ``target``, ``noise``, ``valid`` (may
            be None) and ``cfa`` (:class:`kpnt.train.synthesis.Batch`).
        warmup: eager warm-up steps before each capture (>= 1).

    Raises:
        ValueError: optimiser not capturable Adam, parameters not on one CUDA
            device, or no CUDA.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, loss_fn: Callable,
                 clip: float, example_batch: Any = None, warmup: int = WARMUP_STEPS):
        if not isinstance(optimizer, torch.optim.Adam):
            raise ValueError(f"GraphedStep: the optimizer must be torch.optim.Adam, got {type(optimizer).__name__}")
        if not all(g.get("capturable", False) for g in optimizer.param_groups):
            raise ValueError("GraphedStep: the optimizer must be created with capturable=True "
                             "(its step then runs on the GPU without host synchronisation)")
        self.params = [p for g in optimizer.param_groups for p in g["params"]]
        devices = {p.device for p in self.params}
        if len(devices) != 1 or next(iter(devices)).type != "cuda":
            raise ValueError(f"GraphedStep: all parameters must be on one CUDA device, got {sorted(map(str, devices))}")
        if not torch.cuda.is_available():
            raise ValueError("GraphedStep: needs CUDA (torch.cuda.is_available() is False)")
        if warmup < 1:
            raise ValueError(f"GraphedStep: warmup must be >= 1, got {warmup}")
        self.device = next(iter(devices))
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.clip = float(clip)
        self.warmup = int(warmup)
        self._graphs: dict[tuple, _Entry] = {}
        self._pool = None
        self._lr: list[Tensor] = []
        self._state_mark = None
        self._update_note = None            # why the update last ran on PyTorch's ops (logged once)
        self.reset()
        if example_batch is not None:
            self._entry(example_batch)

    # ------------------------------------------------------------------
    def reset(self) -> None:
        """Drop every captured graph (after ``load_state_dict`` on the model or
        the optimiser, or after changing the parameters); the next call
        captures again.  Re-reads the learning rates."""
        self._graphs.clear()
        self._pool = torch.cuda.graph_pool_handle()
        self._lr = []
        for g in self.optimizer.param_groups:
            lr = g["lr"]
            if not (isinstance(lr, Tensor) and lr.device == self.device and lr.dim() == 0):
                lr = torch.tensor(float(lr), dtype=torch.float32, device=self.device)
                g["lr"] = lr
            self._lr.append(lr)
        self._state_mark = None

    def set_lr(self, lr: float) -> None:
        """Learning rate of every param group for the next steps (a device
        fill, no host sync)."""
        for t in self._lr:
            t.fill_(float(lr))

    @property
    def graphs(self) -> int:
        """Number of captured graphs (one per batch shape, dtype and CFA pattern)."""
        return len(self._graphs)

    # ------------------------------------------------------------------
    def __call__(self, batch) -> StepOutput:
        """Run one step on ``batch`` (its tensors are copied into the graph's
        static buffers; CPU tensors are fine, device tensors are faster)."""
        for g, t in zip(self.optimizer.param_groups, self._lr):
            if g["lr"] is not t:
                raise RuntimeError("GraphedStep: param_groups[..]['lr'] was replaced; the graphs read the captured "
                                   "tensor: use GraphedStep.set_lr(), or call reset() to capture again")
        if self._state_mark is not None and self._first_state() is not self._state_mark:
            raise RuntimeError("GraphedStep: the optimizer state was replaced (load_state_dict?): call reset() "
                               "to capture again")
        e = self._entry(batch)
        e.x.copy_(batch.x, non_blocking=True)
        e.target.copy_(batch.target, non_blocking=True)
        e.noise.copy_(batch.noise, non_blocking=True)
        if e.valid is not None:
            e.valid.copy_(batch.valid, non_blocking=True)
        e.graph.replay()
        # Copied out at once: another graph of the shared pool may reuse the
        # memory of this one's result.
        return StepOutput(e.values.clone())

    # ------------------------------------------------------------------
    def _first_state(self):
        st = self.optimizer.state.get(self.params[0])
        return None if not st else st.get("exp_avg")

    def _state_tensors(self) -> list[Tensor]:
        """Parameters that have a gradient and their Adam state tensors."""
        out = []
        for p in self.params:
            if p.grad is None:
                continue
            out.append(p)
            st = self.optimizer.state.get(p)
            if st:
                out.extend(v for v in st.values() if isinstance(v, Tensor))
        return out

    def _body(self, x, target, noise, valid, cfa, masked: bool) -> Tensor:
        """The step itself (eager in warm-up, captured otherwise); returns
        ``[loss, applied]`` as a (2,) float32 tensor."""
        for p in self.params:
            p.grad = None
        loss = step_loss(self.model, self.loss_fn, x, cfa, noise, target, valid)
        loss.backward()
        with torch.no_grad():
            if all(p.grad is None for p in self.params):
                raise RuntimeError("GraphedStep: the loss gave no parameter a gradient")
            if masked and self._fused_update():
                from kpnt.ops._cuda.train_update import masked_update

                applied = masked_update(self.params, self.optimizer, self.clip, loss)
                return torch.stack([loss.detach().float().reshape(()), applied])
            finite = torch.isfinite(loss) & (nonfinite_grads(self.params) == 0)
            # Backups of parameters and Adam state (clipping changes only
            # gradients, so taking them before it is the same).
            groups: dict[torch.dtype, list[Tensor]] = {}
            if masked:
                for t in self._state_tensors():
                    groups.setdefault(t.dtype, []).append(t)
            backups = {dt: torch.cat([t.reshape(-1) for t in ts]) for dt, ts in groups.items()}
            apply_update(self.params, self.optimizer, self.clip)
            # Masked commit: a non-finite step restores parameters and Adam
            # state (step count, moments) bitwise from the backup.
            for dt, ts in groups.items():
                new = torch.cat([t.reshape(-1) for t in ts])
                sel = torch.where(finite, new, backups[dt])
                torch._foreach_copy_(ts, [v.view_as(t) for v, t in zip(sel.split([t.numel() for t in ts]), ts)])
            return torch.stack([loss.detach().float().reshape(()), finite.float()])

    def _fused_update(self) -> bool:
        """Whether this step's update runs on the update kernels
        (:data:`FUSED_UPDATE`); when it cannot, why is logged once."""
        if not FUSED_UPDATE:
            return False
        from kpnt.ops._cuda.train_update import unsupported

        why = unsupported(self.optimizer, [p for p in self.params if p.grad is not None])
        if why is None:
            try:
                from kpnt.ops._cuda.extension import ext

                ext()
            except Exception as err:    # no compiler, no CUDA toolkit: PyTorch's update does the same
                why = f"the fused kernels did not load ({err})"
        if why is not None and why != self._update_note:
            log.warning("GraphedStep: the update runs on PyTorch's ops, not kpnt's update kernels: %s", why)
            self._update_note = why
        return why is None

    def _snapshot(self):
        with torch.no_grad():
            params = [p.detach().clone() for p in self.params]
            state = {}
            for p in self.params:
                st = self.optimizer.state.get(p)
                if st:
                    state[p] = {k: v.detach().clone() for k, v in st.items() if isinstance(v, Tensor)}
        return params, state

    def _restore(self, snap) -> None:
        params, state = snap
        with torch.no_grad():
            for p, c in zip(self.params, params):
                p.copy_(c)
            for p in self.params:
                st = self.optimizer.state.get(p)
                if not st:
                    continue
                saved = state.get(p, {})
                for k, v in st.items():
                    if isinstance(v, Tensor):
                        # state created during the warm-up: Adam's initial value is zero
                        v.copy_(saved[k]) if k in saved else v.zero_()

    def _entry(self, batch) -> _Entry:
        key = _batch_key(batch)
        e = self._graphs.get(key)
        if e is None:
            e = self._capture(batch)
            self._graphs[key] = e
        return e

    def _capture(self, batch) -> _Entry:
        dev = self.device
        x, target, noise = (_static_copy(t, dev) for t in (batch.x, batch.target, batch.noise))
        valid = _static_copy(batch.valid, dev)
        cfa = batch.cfa
        snap = self._snapshot()
        side = torch.cuda.Stream(device=dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        try:
            with torch.cuda.stream(side):
                for i in range(self.warmup):
                    masked = all(self.optimizer.state.get(p) for p in self.params)
                    # The sync check needs warm caches: not on the first step.
                    if i == 0 or i < self.warmup - 1:
                        self._body(x, target, noise, valid, cfa, masked)
                        continue
                    prev = torch.cuda.get_sync_debug_mode()
                    torch.cuda.set_sync_debug_mode("error")
                    try:
                        self._body(x, target, noise, valid, cfa, masked)
                    except RuntimeError as err:
                        raise RuntimeError(f"GraphedStep: the training step synchronises with the host, so it cannot "
                                           f"be captured in a CUDA graph ({err})") from err
                    finally:
                        torch.cuda.set_sync_debug_mode(prev)
        finally:
            torch.cuda.current_stream(dev).wait_stream(side)
            self._restore(snap)
        if not all(self.optimizer.state.get(p) for p in self.params if p.grad is not None):
            raise RuntimeError("GraphedStep: Adam has no state after the warm-up")
        graph = torch.cuda.CUDAGraph()
        keep = _KeepExternal()
        with torch.cuda.graph(graph, pool=self._pool):
            with keep:
                values = self._body(x, target, noise, valid, cfa, masked=True)
        self._state_mark = self._first_state()
        log.info("GraphedStep: captured a graph for x %s, CFA %s (%d graphs)", tuple(batch.x.shape),
                 None if cfa is None else getattr(cfa, "name", "?"), len(self._graphs) + 1)
        grads = [p.grad for p in self.params]
        return _Entry(graph, x, target, noise, valid, values, keep=list(keep.kept.values()) + grads)


def eager_step(model, optimizer, loss_fn: Callable, clip: float, batch) -> float | None:
    """The same step without a graph, as :meth:`kpnt.train.loop.Trainer.train_step`
    does it for one shard in one process: returns the loss, or None when the
    step was skipped for a non-finite loss or gradient (nothing updated).
    The reference that :class:`GraphedStep` is checked against."""
    optimizer.zero_grad(set_to_none=True)
    loss = step_loss(model, loss_fn, batch.x, batch.cfa, batch.noise, batch.target, batch.valid)
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    value, bad = torch.stack([loss.detach().double(), nonfinite_grads(params).to(loss.device)]).tolist()
    if not math.isfinite(value) or bad > 0:
        optimizer.zero_grad(set_to_none=True)
        return None
    apply_update(params, optimizer, clip)
    return value
