"""The pre-LLM baselines' non-default counts end to end on the tiny LLaVA-NeXT (the conformance
suite runs their defaults on every host)."""

from __future__ import annotations

import pytest
import torch

import vtcompress as vtc
from tests.conformance.hosts import HOSTS, picture

pytestmark = pytest.mark.filterwarnings("ignore")
LLAVA = next(h for h in HOSTS if h.name == "llava_next")


def run(config):
    model, _ = LLAVA.build(torch.float32)
    handle = vtc.compress(model, config)
    inputs = LLAVA.inputs([picture(1000, 500)])
    with torch.no_grad():
        logits = model(**inputs).logits
    image = handle.last_stats.images[0]
    handle.remove()
    removed = (image.tokens_before - image.tokens_after) + (image.newlines_before - image.newlines_after)
    assert logits.shape[1] == inputs["input_ids"].shape[1] - removed
    return image


def test_visionzip_per_view_counts_and_paper_mode():
    image = run(vtc.VisionZipConfig(dominant=5, contextual=2))
    assert [v.kept for v in image.views] == [min(7, v.original) for v in image.views]
    paper = run(vtc.VisionZipConfig.paper(dominant=5, contextual=2))
    assert [v.kept for v in paper.views] == [min(6, v.original) for v in paper.views]  # [CLS] slot empty


def test_divprune_paper_count():
    image = run(vtc.DivPruneConfig.paper(ratio=0.098))
    assert image.tokens_after == int(round(0.098 * image.tokens_before))
