"""Autograd glue shared by the fused ops: inputs and gradients by name.

A custom op's backward must return one gradient per input, in order.  The
fused levels take a dozen or more inputs (tensors, index tables, scalars);
counting ``(None,) * 18`` by hand breaks silently when one is added.  Here
the input names come from the op's Python signature, and a backward names
the gradients it has: :func:`grads` puts them in place and ``None``
elsewhere, and refuses a name that is not an input.
"""
from __future__ import annotations

import inspect
from typing import Callable


def input_names(fn: Callable) -> tuple[str, ...]:
    """Parameter names of a custom op's implementation, in order."""
    return tuple(inspect.signature(fn).parameters)


def by_name(names: tuple[str, ...], values) -> dict:
    """``{name: value}`` of a custom op's inputs (or of ``ctx.needs_input_grad``)."""
    values = tuple(values)
    if len(values) != len(names):
        raise RuntimeError(f"expected {len(names)} values for {names}, got {len(values)}")
    return dict(zip(names, values))


def grads(names: tuple[str, ...], **given) -> tuple:
    """One gradient per input of ``names``: those ``given`` by name, ``None``
    for the rest."""
    unknown = set(given) - set(names)
    if unknown:
        raise RuntimeError(f"gradients for unknown inputs {sorted(unknown)}; inputs: {names}")
    return tuple(given.get(n) for n in names)
