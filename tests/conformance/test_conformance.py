"""Every registered method on every host (tiny offline models): the behaviour a user relies on.

Parametrized over ``vtcompress.available_methods()`` x :data:`tests.conformance.hosts.HOSTS`, so
a new method or host gets all of it by registering. A method a host cannot serve must be refused
on ``compress`` with an error naming both; the other cases then do not apply.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import vtcompress as vtc
from tests.conformance.hosts import (
    HOSTS,
    IN_LM_METHODS,
    SERVED_PAIRS,
    TINY_STAGES,
    HostCase,
    pair_id,
    picture,
)
from tests.helpers.padding import right_padded
from vtcompress.budget import keep_count

torch.set_num_threads(1)
METHODS = vtc.available_methods()
RATIO = 0.3
# (width, height): square, wide, tall, and very thin / very wide strips (receipts, banners).
SIZES = [(672, 672), (1000, 500), (300, 900)]
EXTREME = [(3000, 4), (4, 3000), (2000, 12), (12, 2000)]

pytestmark = pytest.mark.filterwarnings("ignore")
# Behaviour of methods that act before the language model only. In-LM methods prune once at
# prefill, scored by the prompt's last token, so a full forward per step (which re-scores with the
# new last token) is not what generate computes; tests/hosts/test_lm_pruning.py checks generate
# against a forward loop with the cache. Several images in one prompt share one in-LM budget.
PRE_LM_ONLY = {"test_greedy_generate_equals_greedy_forward", "test_several_images_in_one_prompt"}
# DART ranks image tokens by cosine similarity, and on the tiny models' flat picture areas most
# pairs are near-ties (median cosine 0.999) that float noise between a padded batch and one
# sequence resolves differently; tests/hosts/test_lm_pruning.py checks its batch against one by
# one on greedy, sampling and beam outputs instead.
NOT_BATCH_STABLE = {"dart"}


def config(host: HostCase, method: str, ratio: float = RATIO) -> vtc.CompressionConfig:
    """What a user gets by naming ``method``: the host's defaults for it (e.g. metric="projected"
    where there are no vision hidden states in token order)."""
    return vtc.config_for(host.build(torch.float32)[0], method, ratio=ratio, **TINY_STAGES.get(method, {}))


def model_of(host: HostCase, dtype=torch.float32):
    model, _ = host.build(dtype)
    handle = vtc.get_handle(model)
    if handle is not None:
        handle.remove()
    return model


def attach(host: HostCase, method: str, ratio: float = RATIO, dtype=torch.float32):
    """The compressed model and its handle (``method`` is one the host serves)."""
    model = model_of(host, dtype)
    return model, vtc.compress(model, config(host, method, ratio))


def pytest_generate_tests(metafunc):
    """Tests of ``host`` and ``method`` run on the pairs a user can run (:data:`SERVED_PAIRS`);
    the refusal test on every pair."""
    if {"host", "method"} <= set(metafunc.fixturenames):
        name = metafunc.function.__name__
        every = name == "test_refusal_names_method_and_host"
        pairs = [(h, m) for h in HOSTS for m in METHODS] if every else SERVED_PAIRS
        if name in PRE_LM_ONLY:
            pairs = [(h, m) for h, m in pairs if m not in IN_LM_METHODS]
        if name == "test_mixed_size_batch_equals_one_by_one":
            pairs = [(h, m) for h, m in pairs if m not in NOT_BATCH_STABLE]
        metafunc.parametrize(("host", "method"), pairs, ids=pair_id, indirect=["host"])
    elif "host" in metafunc.fixturenames:
        metafunc.parametrize("host", HOSTS, ids=pair_id, indirect=True)


@pytest.fixture
def host(request):
    yield request.param
    for dtype in (torch.float32, torch.bfloat16):
        if request.param.build.cache_info().currsize:
            model, _ = request.param.build(dtype)
            handle = vtc.get_handle(model)
            if handle is not None:
                handle.remove()


def test_refusal_names_method_and_host(host, method):
    """A method is served as documented, or refused on attach, naming the method, the host and the gap."""
    model = model_of(host)
    if method in host.served:
        vtc.compress(model, config(host, method)).remove()
        return
    with pytest.raises(ValueError, match="does not provide") as err:
        vtc.compress(model, config(host, method))
    assert method in str(err.value) and "host" in str(err.value)
    assert vtc.get_handle(model) is None


def test_the_documented_methods_are_served_by_name(host):
    """A method name works as documented on each host, with the host's defaults; the rest are refused."""
    model = model_of(host)
    served = set()
    for method in METHODS:
        try:
            vtc.compress(model, method, **TINY_STAGES.get(method, {})).remove()
        except ValueError as err:
            assert "does not provide" in str(err), err
        else:
            served.add(method)
    assert served == host.served


@torch.no_grad()
@pytest.mark.parametrize("size", SIZES + EXTREME, ids=lambda s: f"{s[0]}x{s[1]}")
def test_forward_counts_follow_the_rule(host, method, size):
    model, handle = attach(host, method)
    if not host.serves(*size):  # the processor refuses it, naming the limit
        with pytest.raises(ValueError, match="aspect ratio"):
            host.inputs([picture(*size)])
        handle.remove()
        return
    inputs = host.inputs([picture(*size)])
    logits = model(**inputs).logits
    image = handle.last_stats.images[0]
    assert image.tokens_after == keep_count(image.tokens_before, RATIO)
    if method not in IN_LM_METHODS:  # in-LM: the views show what entered the language model
        assert sum(v.kept for v in image.views) == image.tokens_after
    assert all(v.kept <= v.original for v in image.views)
    removed = (image.tokens_before - image.tokens_after) + (image.newlines_before - image.newlines_after)
    assert logits.shape[1] == inputs["input_ids"].shape[1] - removed
    sample = handle.last_stats.samples[0]
    assert sample.length_before - sample.length_after == removed
    assert torch.isfinite(logits).all()
    handle.remove()


@torch.no_grad()
def test_ratio_one_and_remove_are_bit_identical(host, method):
    model = model_of(host)
    inputs = host.inputs([picture(1000, 500), picture(300, 900, seed=1)])
    reference = model(**inputs).logits
    greedy = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    model, handle = attach(host, method, ratio=1.0)
    if handle.config.is_off:
        assert torch.equal(model(**inputs).logits, reference)
        assert torch.equal(model.generate(**inputs, max_new_tokens=3, do_sample=False), greedy)
        assert handle.last_stats.tokens_after == handle.last_stats.tokens_before
    vtc.compress(model, config(host, method)).remove()
    assert torch.equal(model(**inputs).logits, reference)
    assert torch.equal(model.generate(**inputs, max_new_tokens=3, do_sample=False), greedy)


@torch.no_grad()
@pytest.mark.parametrize(
    "mode",
    [
        dict(do_sample=False),
        dict(do_sample=True, num_return_sequences=2, top_k=5),
        dict(do_sample=False, num_beams=2, num_return_sequences=2),
    ],
    ids=["greedy", "sampling-2", "beams-2"],
)
def test_generate_returns_the_callers_prompt(host, method, mode):
    model, handle = attach(host, method)
    inputs = host.inputs([picture(1000, 500), picture(300, 900, seed=1)])
    ids = inputs["input_ids"]
    torch.manual_seed(0)
    out = model.generate(**inputs, max_new_tokens=3, **mode)
    returns = mode.get("num_return_sequences", 1)
    assert out.shape[0] == ids.shape[0] * returns
    assert out.shape[1] > ids.shape[1]
    assert torch.equal(out[:, : ids.shape[1]], ids.repeat_interleave(returns, dim=0))
    assert handle.last_stats.tokens_after == sum(
        keep_count(im.tokens_before, RATIO) for im in handle.last_stats.images
    )
    handle.remove()


@torch.no_grad()
def test_greedy_generate_equals_greedy_forward(host, method):
    model, handle = attach(host, method)
    inputs = host.inputs([picture(1000, 500)])
    out = model.generate(**inputs, max_new_tokens=3, do_sample=False)
    step = dict(inputs)
    per_token = [
        k for k, v in inputs.items() if torch.is_tensor(v) and v.shape[:2] == inputs["input_ids"].shape
    ]
    for _ in range(3):
        nxt = model(**step).logits[:, -1].argmax(-1, keepdim=True)
        step["input_ids"] = torch.cat([step["input_ids"], nxt], 1)
        for k in per_token:  # the mask (and DocOwl's modality indicators) grow with text tokens
            if k != "input_ids":
                fill = torch.ones_like(nxt) if k == "attention_mask" else torch.zeros_like(nxt)
                step[k] = torch.cat([step[k], fill.to(step[k].dtype)], 1)
    assert torch.equal(out, step["input_ids"])
    handle.remove()


@torch.no_grad()
def test_mixed_size_batch_equals_one_by_one(host, method):
    model, handle = attach(host, method)
    images = [picture(672, 672), picture(1000, 500, seed=1), picture(300, 900, seed=2)]
    questions = ["What?", "Where is the red square in this picture?", "Count the shapes."]
    batch = model(**host.inputs(images, questions)).logits[:, -1]  # left-padded: -1 is real
    batch_stats = handle.last_stats
    for i, image in enumerate(images):
        single = model(**host.inputs([image], [questions[i]])).logits[:, -1]
        torch.testing.assert_close(batch[i : i + 1], single, atol=2e-4, rtol=1e-4)
        alone = handle.last_stats.images[0]
        assert [v.positions for v in alone.views] == [v.positions for v in batch_stats.images[i].views]
    handle.remove()


@torch.no_grad()
def test_a_right_padded_batch_stays_right_padded(host):
    """Exact at ratio 1.0, and when compressed each row's real tokens come first, as long as the
    row alone (the batch as long as its longest row) and with its logits."""
    model = model_of(host)
    images = [picture(672, 672), picture(1000, 500, seed=1)]
    questions = ["What?", "Where is the red square in this picture?"]
    call = right_padded(host.inputs(images, questions))
    stock = model(**call).logits
    with vtc.compressed(model, config(host, "uniform", 1.0)):
        assert torch.equal(model(**call).logits, stock)
    handle = vtc.compress(model, config(host, "uniform"))
    out = model(**call).logits
    lengths = [s.length_after for s in handle.last_stats.samples]
    assert out.shape[1] == max(lengths) and lengths[0] != lengths[1]
    for i, image in enumerate(images):
        alone = model(**host.inputs([image], [questions[i]])).logits[0]
        assert alone.shape[0] == lengths[i]
        torch.testing.assert_close(out[i, : lengths[i]], alone, atol=2e-4, rtol=1e-4)
    handle.remove()


@torch.no_grad()
def test_labels_are_cut_with_the_prompt(host, method):
    model, handle = attach(host, method)
    inputs = host.inputs([picture(1000, 500)])
    ids = inputs["input_ids"]
    image_id = host.image_token_id(model)
    labels = ids.masked_fill(ids == image_id, -100)
    out = model(**inputs, labels=labels)
    image = handle.last_stats.images[0]
    # The shortened prompt keeps every text token in order; each run of image placeholders is cut
    # to its kept tokens (one run per image, or per view where a host separates views).
    runs = _runs(ids[0] == image_id)
    per_view = [v.kept + image.newlines_after // len(image.views) for v in image.views]
    new_lengths = [image.tokens_after + image.newlines_after] if len(runs) == 1 else per_view
    assert len(runs) == len(new_lengths)
    pieces, cursor = [], 0
    for (start, stop), new in zip(runs, new_lengths):
        pieces += [labels[0, cursor:start], torch.full((new,), -100)]
        cursor = stop
    short = torch.cat([*pieces, labels[0, cursor:]])
    assert short.shape[0] == out.logits.shape[1]
    expected = F.cross_entropy(out.logits[0, :-1].float(), short[1:], ignore_index=-100)
    torch.testing.assert_close(out.loss, expected, atol=1e-4, rtol=1e-4)
    handle.remove()


def _runs(flags: torch.Tensor) -> list[tuple[int, int]]:
    """[start, stop) of each run of True in a 1-D bool tensor."""
    edges = torch.diff(torch.cat([torch.tensor([0]), flags.int(), torch.tensor([0])]))
    return list(zip((edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()))


@torch.no_grad()
def test_several_images_in_one_prompt(host, method):
    model, handle = attach(host, method)
    inputs = host.inputs([picture(672, 672), picture(300, 900, seed=1)], per_prompt=[2])
    logits = model(**inputs).logits
    stats = handle.last_stats
    assert len(stats.images) == 2
    removed = sum(
        (im.tokens_before - im.tokens_after) + (im.newlines_before - im.newlines_after) for im in stats.images
    )
    assert logits.shape[1] == inputs["input_ids"].shape[1] - removed
    assert all(im.tokens_after == keep_count(im.tokens_before, RATIO) for im in stats.images)
    handle.remove()


def _kept(handle) -> list:
    """What the last call kept: each view's positions, and for in-LM methods the image tokens each
    stage kept (over the sequence)."""
    pruner = getattr(handle._host, "lm_pruner", None)
    stages = [k.tolist() for k in pruner.last_kept] if pruner is not None else []
    return [[v.positions for v in handle.last_stats.images[0].views], stages]


@torch.no_grad()
def test_bf16_follows_the_rule_and_stays_close(host, method):
    inputs = host.inputs([picture(1000, 500)])
    model, handle = attach(host, method)
    reference = model(**inputs).logits
    kept = _kept(handle)
    handle.remove()
    model, handle = attach(host, method, dtype=torch.bfloat16)
    floating = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
    out = model(**floating).logits
    image = handle.last_stats.images[0]
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    assert image.tokens_after == keep_count(image.tokens_before, RATIO)
    if _kept(handle) == kept:  # same tokens kept: same answer up to bf16 rounding
        torch.testing.assert_close(out.float(), reference, atol=0.05, rtol=0.05)
    handle.remove()
