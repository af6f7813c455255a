"""Dead guide channels, and bringing them back (issue 13, session 15).

A hidden channel of the guide (:mod:`kpnt.ref.guide`) whose ReLU is off at
every position of every input is *dead*: it adds nothing, and its ReLU
passes no gradient to its weights, so no amount of training revives it.
On 32 probe tiles of photos/val (``tools/guide_activity.py``) the shipped
guides (16 layers x 64 channels) had lost most of their hidden channels
this way: after layer 0, 47-63 of each layer's 64 in the Bayer file (868 of
1024) and 39-62 in the X-Trans file (819), so each computed with about 5
channels per layer.  They die early in training (466 CPU steps of the
shipped recipe from random weights left 581 dead); why, and the
projection blocks that prevent it: :func:`kpnt.ref.guide._network`.

:func:`revive_dead_guide_channels` gives each dead channel fresh incoming
weights, He-normal at the guide's initial scale times ``scale``, and a zero
bias.  The ReLU gates by sign, not size, so a small channel is as alive as a
large one: it starts adding little to the network's output (the trained
function is nearly kept) and receives gradient from then on.  In a guide
of projection blocks (``ModelConfig.guide_proj``) a channel's way out is its
column of the 1x1 projection: that column is zeroed and the fresh weights
have full scale, so the function is kept exactly (as ReDo, Sokar et al.
2023, recycles dormant units).

Measured (session 15, 2-core CPU, 600 steps at lr 1e-4 from the shipped
Bayer file): revival changed nothing in PSNR, and the revived channels of
the plain residual guide died again (173 dead, 815 of 1024 active at under
1% of positions after the run): in ``z + relu(conv(z))`` dying is how an
unhelpful channel is silenced.  Hence the projection blocks.
"""
from __future__ import annotations

import logging
from contextlib import ExitStack

import torch

from kpnt.ref.guide import hidden_layers, record_activity

log = logging.getLogger(__name__)

#: Fresh incoming weights of a revived channel, relative to the guide's
#: initial scale (:func:`kpnt.ref.guide.init_guide`).
REVIVE_SCALE = 0.1
#: Draws of fresh weights per dead channel before it is left as it is.
REVIVE_TRIES = 4


def guide_activity(model, batches) -> list[torch.Tensor]:
    """Per hidden guide layer, the (width,) share of packed positions where
    each channel is active, the largest over ``batches`` (each with ``x``,
    ``cfa`` and ``noise`` on the model's device).  Empty without a guide."""
    return probe_guide(model, batches, record_activity)[0]


def probe_guide(model, batches, *recorders) -> list[list[torch.Tensor]]:
    """Run ``model`` on ``batches`` (no autograd) inside every recorder of
    :mod:`kpnt.ref.guide` (``record_activity``, ``record_preactivation``) at
    once; per recorder, its per-layer tensors' elementwise maximum over the
    batches (empty lists without a guide)."""
    tops: list[list[torch.Tensor]] = [[] for _ in recorders]
    with torch.no_grad():
        for b in batches:
            with ExitStack() as stack:
                records = [stack.enter_context(r()) for r in recorders]
                model(b.x, b.cfa, b.noise)
            tops = [[t.clone() for t in rec] if not top else [torch.maximum(a, t) for a, t in zip(top, rec)]
                    for top, rec in zip(tops, records)]
    return tops


def _guide_weights(model) -> list[torch.nn.Parameter]:
    sets = getattr(model, "sets", {})
    return list(sets["guide"]) if "guide" in sets else []


def revive_dead_guide_channels(model, batches, gen: torch.Generator, scale: float = REVIVE_SCALE,
                               tries: int = REVIVE_TRIES) -> dict:
    """Re-initialise the guide's dead hidden channels (module doc), in place.

    Args:
        model: a :class:`kpnt.model.KPNT` with a guide.
        batches: probe batches (``x``, ``cfa``, ``noise`` on the model's
            device): a channel is dead when none of their positions
            activates it.
        gen: random generator of the fresh weights (CPU).
        scale: fresh weights relative to the guide's initial scale.
        tries: fresh draws per channel while it stays dead on the probes.
    Returns:
        ``{"dead": [per layer], "revived": [per layer], "width": W}``:
        channels found dead, and those active after revival.
    Raises:
        ValueError: the model has no guide.
    """
    weights = _guide_weights(model)
    if not weights:
        raise ValueError("the model has no guide (--guide-layers 0): there are no guide channels to revive")
    skip, proj = bool(model.config.guide_skip), bool(model.config.guide_proj)
    layers = hidden_layers(weights, proj)
    dead = [torch.nonzero(a == 0).flatten().tolist() for a in guide_activity(model, batches)]
    found = [len(d) for d in dead]
    pending = [list(d) for d in dead]
    for _ in range(tries):
        if not any(pending):
            break
        with torch.no_grad():
            for i, chans in enumerate(pending):
                if not chans:
                    continue
                w, b = layers[i][0], layers[i][1]
                fan_in = w.shape[1] * w.shape[2] * w.shape[3]
                std = (2.0 / fan_in) ** 0.5
                projected = len(layers[i]) == 4
                if not projected:
                    # The channel adds straight into the network: small weights.
                    std *= scale / (len(layers) ** 0.5 if skip and i > 0 else 1.0)
                fresh = torch.randn((len(chans),) + tuple(w.shape[1:]), generator=gen) * std
                idx = torch.tensor(chans, device=w.device)
                w[idx] = fresh.to(w.device, w.dtype)
                b[idx] = 0
                if projected:
                    # ReDo-style: a zero projection column keeps the function
                    # exactly, the channel learns its use through P.
                    layers[i][2][:, idx] = 0
        activity = guide_activity(model, batches)
        pending = [[c for c in chans if activity[i][c] == 0] for i, chans in enumerate(pending)]
    revived = [f - len(p) for f, p in zip(found, pending)]
    log.info("guide: %d of %d hidden channels were dead; %d revived (per layer: %s)", sum(found),
             len(layers) * weights[0].shape[0], sum(revived), " ".join(f"{r}/{f}" for r, f in zip(revived, found)))
    return {"dead": found, "revived": revived, "width": int(weights[0].shape[0])}
