"""Let ``generate`` of a ``llava`` package model run on transformers >= 4.38.

llava-torch 1.2.2.post1 was written for transformers 4.36/4.37. From 4.38 on, ``generate``
passes ``cache_position`` to ``forward``, whose signature lacks it (``TypeError ... unexpected
keyword argument 'cache_position'``), and the model's ``generate`` hands ``attention_mask=None``
on, which newer ``generate`` cannot extend. :func:`patch_generate` fixes both on the instance
(the class stays untouched); on 4.36/4.37 it changes nothing that runs.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

_MARK = "_vtcompress_generate_patched"


def patch_generate(model: nn.Module) -> nn.Module:
    """Drop ``cache_position`` from ``forward`` calls and give ``generate`` a full attention mask
    when the caller passes none. Idempotent; returns ``model``."""
    if getattr(model, _MARK, False):
        return model
    forward, generate = model.forward, model.generate

    @functools.wraps(forward)  # generate checks keyword arguments against this signature
    def forward_without_cache_position(*args, **kwargs):
        kwargs.pop("cache_position", None)
        return forward(*args, **kwargs)

    @functools.wraps(generate)
    def generate_with_mask(inputs=None, *args, **kwargs):
        if inputs is not None and kwargs.get("attention_mask") is None:
            kwargs["attention_mask"] = torch.ones_like(inputs, dtype=torch.long)
        return generate(inputs, *args, **kwargs)

    model.forward = forward_without_cache_position
    model.generate = generate_with_mask
    setattr(model, _MARK, True)
    return model
