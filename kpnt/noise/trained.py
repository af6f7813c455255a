"""The noise levels a model was trained on, and keeping inference inside them
(issue 13).

``kpnt-train`` records the white-balanced range its synthesis could hand the
model (``weights_io.NOISE_RANGE_KEY`` in the weights' provenance;
:func:`trained_noise_range`), :func:`kpnt.weights_io.load_weights`
sets it as ``model.noise_range``, and :func:`clamp_to_trained_noise` clips
the level inference tells the model into it.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger("kpnt.denoise")


def clamp_to_trained_noise(model, noise_wb: np.ndarray, what="") -> np.ndarray:
    """``noise_wb`` (2, 3) clipped into the range the weights were trained on
    (``model.noise_range``, from the weights' provenance; models without
    one are left alone).  A noise level outside the trained range pushes the
    network off its domain (issue 13: a near-zero level once cost 2.5-4.8 dB
    on clean mosaics); the clip is logged (``--verbose``)."""
    rng = getattr(model, "noise_range", None)
    if not rng:
        return noise_wb
    lo = np.array([rng["a"][0], rng["b"][0]], dtype=np.float32)[:, None]
    hi = np.array([rng["a"][1], rng["b"][1]], dtype=np.float32)[:, None]
    clipped = np.clip(noise_wb, lo, hi).astype(np.float32)
    if not np.array_equal(clipped, noise_wb):
        log.info("%s: noise level a=%s b=%s clipped into the trained range a<=%.3g b<=%.3g (white-balanced)",
                 what, np.array2string(noise_wb[0], precision=3), np.array2string(noise_wb[1], precision=3), hi[0, 0], hi[1, 0])
    return clipped


def trained_noise_range(cams, config=None) -> dict:
    """White-balanced ``{"a": [lo, hi], "b": [lo, hi]}`` the synthesis can
    hand the model for these cameras (profiles x jitter x the largest WB
    gain; down to 0 when clean inputs are drawn): stored with the weights,
    and inference clips its noise level into it (kpnt.denoise)."""
    from kpnt.train.synthesis import SynthConfig

    sc = config or SynthConfig()
    noise = np.concatenate([c.noise for c in cams])                      # (K, 2, 3), raw scale
    jitter, gain = float(np.exp(sc.noise_jitter)), max(sc.wb_red[1], sc.wb_blue[1], 1.0)
    if sc.zero_noise_prob > 0:
        lo = (0.0, 0.0)
    else:
        shrink = float(np.exp(-sc.noise_jitter)) * (10.0 ** sc.low_noise_decades if sc.low_noise_prob > 0 else 1.0)
        lo = (float(noise[:, 0].min()) * shrink, max(float(noise[:, 1].min()), 0.0) * shrink)
    return {"a": [lo[0], float(noise[:, 0].max()) * jitter * gain],
            "b": [lo[1], max(float(noise[:, 1].max()), 0.0) * jitter * gain * gain]}
