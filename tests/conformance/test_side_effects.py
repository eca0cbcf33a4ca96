"""Compressing changes nothing the caller owns, for every method a host serves (tiny offline models).

Before and after a compressed ``forward`` and a compressed ``generate``: the global random
generators (torch CPU, CUDA where present, numpy, Python's ``random``), the default dtype, grad
mode, torch's thread count, the float32 matmul precision and the deterministic-algorithms switch,
and the caller's inputs (the same dict keys holding the same tensor objects, with the same values
and no in-place write: ``_version`` unchanged). After ``remove()``, the model's parameters,
buffers and config are as before ``compress``.

And a seeded sampled ``generate`` draws the same tokens with compression on as off wherever the
model sees the same tokens: at ratio 1.0, and when a method consumed random numbers of the
global generator while compressing (``random`` with ``torch.manual_seed``), the draws after it
would differ.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

import vtcompress as vtc
from tests.conformance.hosts import SERVED_PAIRS, TINY_STAGES, HostCase, pair_id, picture

pytestmark = pytest.mark.filterwarnings("ignore")


def _model(host: HostCase):
    model, _ = host.build(torch.float32)
    handle = vtc.get_handle(model)
    if handle is not None:
        handle.remove()
    return model


@pytest.fixture
def pair(request):
    host, method = request.param
    yield host, method
    handle = vtc.get_handle(host.build(torch.float32)[0])
    if handle is not None:
        handle.remove()


def global_state() -> dict:
    """Everything process-wide a compression call could plausibly change."""
    state = {
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
        "default_dtype": torch.get_default_dtype(),
        "grad": torch.is_grad_enabled(),
        "threads": torch.get_num_threads(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
    }
    if torch.cuda.is_available():
        state["cuda_rng"] = torch.cuda.get_rng_state_all()
    return state


def assert_same_state(before: dict, after: dict, when: str) -> None:
    assert before.keys() == after.keys()
    for key, value in before.items():
        other = after[key]
        if key == "numpy_rng":
            same = value[0] == other[0] and np.array_equal(value[1], other[1]) and value[2:] == other[2:]
        elif key == "cuda_rng":
            same = len(value) == len(other) and all(torch.equal(a, b) for a, b in zip(value, other))
        elif isinstance(value, torch.Tensor):
            same = torch.equal(value, other)
        else:
            same = value == other
        assert same, f"{when} changed {key}"


def snapshot_inputs(inputs: dict) -> dict:
    return {k: (v, v.clone(), v._version, v.data_ptr()) for k, v in inputs.items() if torch.is_tensor(v)}


def assert_inputs_untouched(inputs: dict, snap: dict, keys: list, when: str) -> None:
    assert list(inputs) == keys, f"{when} changed the caller's input dict"
    for k, (obj, values, version, ptr) in snap.items():
        now = inputs[k]
        assert now is obj, f"{when} replaced inputs[{k!r}]"
        assert now._version == version and now.data_ptr() == ptr, f"{when} wrote into inputs[{k!r}] in place"
        assert torch.equal(now, values), f"{when} changed the values of inputs[{k!r}]"


def _seed_everything() -> None:
    torch.manual_seed(1234)
    np.random.seed(1234)
    random.seed(1234)


@pytest.mark.parametrize("pair", SERVED_PAIRS, ids=lambda p: f"{pair_id(p[0])}-{p[1]}", indirect=True)
def test_compressed_calls_leave_global_state_and_inputs_alone(pair):
    host, method = pair
    model = _model(host)
    params = {k: v.clone() for k, v in model.state_dict().items()}
    config_before = model.config.to_dict()
    inputs = host.inputs([picture(1000, 500), picture(300, 900, seed=1)])
    keys, snap = list(inputs), snapshot_inputs(inputs)
    handle = vtc.compress(model, vtc.config_for(model, method, ratio=0.3, **TINY_STAGES.get(method, {})))

    _seed_everything()
    before = global_state()
    model(**inputs)  # grad mode on, as a caller's default
    assert_same_state(before, global_state(), "a compressed forward")
    assert_inputs_untouched(inputs, snap, keys, "a compressed forward")
    assert handle.last_stats.tokens_after < handle.last_stats.tokens_before  # it did compress

    with torch.no_grad():
        before = global_state()
        model.generate(**inputs, max_new_tokens=2, do_sample=False)
        assert_same_state(before, global_state(), "a compressed greedy generate")
    assert_inputs_untouched(inputs, snap, keys, "a compressed generate")

    handle.remove()
    assert model.config.to_dict() == config_before
    after = model.state_dict()
    assert after.keys() == params.keys() and all(torch.equal(after[k], v) for k, v in params.items())


@torch.no_grad()
@pytest.mark.parametrize("pair", SERVED_PAIRS, ids=lambda p: f"{pair_id(p[0])}-{p[1]}", indirect=True)
def test_seeded_sampling_is_unchanged_at_ratio_one(pair):
    """Same kept tokens (ratio 1.0): a seeded sampled generate draws the same tokens, and leaves
    the global generator where the uncompressed call leaves it."""
    host, method = pair
    model = _model(host)
    inputs = host.inputs([picture(1000, 500), picture(300, 900, seed=1)])
    mode = dict(do_sample=True, top_k=20, temperature=1.5, max_new_tokens=4, num_return_sequences=2)
    torch.manual_seed(7)
    reference = model.generate(**inputs, **mode)
    reference_rng = torch.get_rng_state()
    with vtc.compressed(
        model, vtc.config_for(model, method, ratio=1.0, **TINY_STAGES.get(method, {}))
    ) as handle:
        torch.manual_seed(7)
        out = model.generate(**inputs, **mode)
        assert handle.last_stats.tokens_after == handle.last_stats.tokens_before
    assert torch.equal(out, reference)
    assert torch.equal(torch.get_rng_state(), reference_rng)


@torch.no_grad()
@pytest.mark.parametrize("pair", SERVED_PAIRS, ids=lambda p: f"{pair_id(p[0])}-{p[1]}", indirect=True)
def test_seeded_sampling_after_compression_draws_from_the_callers_seed(pair):
    """At ratio 0.3 the prompt differs from the uncompressed one, but the sampling noise does not:
    the draws after a compressed forward are those of the caller's seed (the forward consumed
    none of them), so the sampled continuation equals the one sampled by hand from the logits."""
    host, method = pair
    model = _model(host)
    inputs = host.inputs([picture(1000, 500)])
    with vtc.compressed(model, vtc.config_for(model, method, ratio=0.3, **TINY_STAGES.get(method, {}))):
        logits = model(**inputs).logits[:, -1].float()
        torch.manual_seed(11)
        out = model.generate(**inputs, do_sample=True, top_k=0, max_new_tokens=1)
    torch.manual_seed(11)
    expected = torch.multinomial(torch.softmax(logits, dim=-1), 1)
    assert out[0, -1].item() == expected[0, 0].item()
