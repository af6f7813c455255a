"""Caching of index/weight tensors that depend only on shapes and patterns."""
from __future__ import annotations

import functools

import torch


def tensor_cache(maxsize: int = 64):
    """``lru_cache`` for builders of constant tensors, run outside inference
    mode and with autograd on: a tensor first built under
    ``torch.inference_mode()`` (inference) must stay usable in later
    training, where autograd saves index tensors for the backward pass."""

    def deco(fn):
        @functools.lru_cache(maxsize=maxsize)
        @functools.wraps(fn)
        def cached(*args):
            with torch.inference_mode(False), torch.enable_grad():
                return fn(*args)

        return cached

    return deco
