"""PiToMe / ToMe's projector placement on the DocOwl1.5 port (no padding, 32x8 token views)."""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conftest import doc_image
from vtcompress.budget import keep_count
from vtcompress.integrations.docowl.processing import mplug_owl2_prompt
from vtcompress.integrations.docowl.tiny import build_tiny_docowl


@torch.no_grad()
def test_projected_metric_follows_the_count_rule_and_others_name_the_fix():
    model, proc = build_tiny_docowl(seed=0)
    inputs = proc(images=[doc_image(300, 120, 6, 1)], text=[mplug_owl2_prompt("What?")])
    reference = model(**inputs).logits
    for config in (
        vtc.PiToMeConfig(ratio=0.3, metric="projected"),
        vtc.ToMeConfig(ratio=0.3, metric="projected"),
    ):
        with vtc.compressed(model, config) as handle:
            out = model(**inputs).logits
            stats = handle.last_stats.images[0]
            assert stats.tokens_after == keep_count(stats.tokens_before, 0.3)
            assert out.shape[1] == reference.shape[1] - (stats.tokens_before - stats.tokens_after)
    assert torch.equal(model(**inputs).logits, reference)
    for config, fix in (
        (vtc.PiToMeConfig(ratio=0.3), "metric='projected'"),
        (vtc.ToMeConfig(ratio=0.3, placement="tower"), "placement='projector'"),
    ):
        with pytest.raises(ValueError, match=f"DocOwl.*does not provide.*{fix}"):  # refused on attach
            vtc.compress(model, config)
        assert vtc.get_handle(model) is None
