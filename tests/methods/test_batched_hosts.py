"""On every host, the batched path gives the per-image path's tokens and logits."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import vtcompress as vtc
from tests.conformance.hosts import HOSTS, SERVED_PAIRS, pair_id, picture
from vtcompress import registry

BATCHED = [m for m in vtc.available_methods() if registry.get_method(m).compress_batch is not None]
# two images of one size (one batched group) and two of others
IMAGES = [(672, 672, 0), (1000, 500, 1), (672, 672, 2), (300, 900, 3)]

pytestmark = pytest.mark.filterwarnings("ignore")


def run(host, method: str):
    model, _ = host.build(torch.float32)
    old = vtc.get_handle(model)
    if old is not None:
        old.remove()
    handle = vtc.compress(model, method, ratio=0.3)
    images = [picture(w, h, seed) for w, h, seed in IMAGES]
    with torch.no_grad():
        logits = model(**host.inputs(images)).logits
    stats = handle.last_stats
    handle.remove()
    views = [[(v.kept, v.positions) for v in im.views] for im in stats.images]
    return logits, views, [im.tokens_after for im in stats.images]


@pytest.mark.parametrize(
    ("host", "method"), [(h, m) for h, m in SERVED_PAIRS if m in BATCHED], ids=pair_id
)  # the pairs a host refuses are the conformance suite's refusal test
def test_batched_equals_per_image_on_the_host(host, method, monkeypatch):
    spec = registry.get_method(method)
    groups = []

    def counted(tokens, config):
        out = spec.compress_batch(tokens, config)
        groups.append((len(tokens), out is not None))
        return out

    monkeypatch.setitem(registry._METHODS, method, dataclasses.replace(spec, compress_batch=counted))
    batched = run(host, method)
    # the two 672 x 672 images went through the batched path together (DocOwl's grouped
    # tokencorr keeps the per-image path)
    assert ((2, False) if (host.name, method) == ("docowl", "tokencorr") else (2, True)) in groups
    monkeypatch.setitem(registry._METHODS, method, dataclasses.replace(spec, compress_batch=None))
    per_image = run(host, method)
    assert torch.equal(batched[0], per_image[0])
    assert batched[1] == per_image[1]
    assert batched[2] == per_image[2]


def test_stats_views_are_built_only_when_read():
    host = HOSTS[0]
    model, _ = host.build(torch.float32)
    old = vtc.get_handle(model)
    if old is not None:
        old.remove()
    handle = vtc.compress(model, registry.make_config("fastervlm", ratio=0.3))
    with torch.no_grad():
        model(**host.inputs([picture(672, 672), picture(672, 672, 1)]))
    images = handle.last_stats.images
    assert all(callable(im._views) for im in images)  # nothing read back yet
    assert [v.kept for v in images[0].views] and not callable(images[0]._views)
    handle.remove()
