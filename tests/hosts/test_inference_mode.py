"""A compressed model first run under ``torch.inference_mode`` still runs with autograd on.

Hosts and methods cache host-side plans and their device copies per layout; a tensor made under
inference mode cannot be saved for backward later, so a cache filled by an inference-mode call
must not break the next call that records gradients (e.g. a loss for attribution or a probe)."""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conformance.hosts import TINY_STAGES
from tests.conftest import IMAGE_SIZES, inputs_for

# A layout no other test of the session uses, so this test fills the caches itself.
SIZE = (523, 311)


@pytest.mark.parametrize("method", vtc.available_methods("image"))
def test_a_call_with_gradients_after_one_in_inference_mode(model, processor, method):
    assert SIZE not in IMAGE_SIZES.values()
    inputs = inputs_for(processor, [SIZE, IMAGE_SIZES["square"]], ["Hi?", "What is it?"])
    with vtc.compressed(model, method, ratio=0.3, **TINY_STAGES.get(method, {})):
        with torch.inference_mode():
            expected = model(**inputs).logits
        out = model(**inputs, labels=inputs["input_ids"])
        out.loss.backward()
        generated = model.generate(**inputs, max_new_tokens=2, do_sample=False)
    assert any(p.grad is not None for p in model.parameters())
    model.zero_grad(set_to_none=True)
    assert torch.equal(out.logits.detach(), expected)
    assert generated.shape == (2, inputs["input_ids"].shape[1] + 2)
