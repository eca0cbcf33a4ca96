"""Every video method (and image methods frame by frame) on every video host: the behaviour a user
relies on for clips. Hosts are the tiny offline Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision (every
declared family with ``video_inputs`` must be here: see the last test); a new video method
joins by registering (``media = ("video",)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch

import vtcompress as vtc
from tests.conftest import tiny_qwen2_5_vl, tiny_qwen3_vl, uncompressed
from tests.helpers.video_inputs import (
    onevision_pixels,
    onevision_video_inputs,
    qwen3_video_inputs,
    qwen_video_inputs,
    tiny_onevision,
)
from vtcompress.hosts import host_specs

torch.set_num_threads(1)
pytestmark = pytest.mark.filterwarnings("ignore")
RATIO = 0.3
QUESTIONS = ["What happens?", "Who moves first in the clip?"]
VIDEO_ONLY = sorted(set(vtc.available_methods()) - set(vtc.available_methods("image")))
METHODS = VIDEO_ONLY + ["uniform", "tome"]  # + image methods frame by frame


@dataclass(frozen=True)
class VideoHost:
    name: str
    model: Callable[[], torch.nn.Module]
    batch: Callable[[], dict]  # two prompts, one clip each, left padded
    one: Callable[[int], dict]  # sample b of that batch alone

    def __str__(self) -> str:
        return self.name


QWEN_GRIDS = [(3, 4, 6), (2, 4, 4)]  # clips of different lengths
ONEVISION_VIDEOS = onevision_pixels(2, 2, seed=4)
HOSTS = [
    VideoHost(
        "qwen2_5_vl",
        lambda: tiny_qwen2_5_vl()[0],
        lambda: qwen_video_inputs(QWEN_GRIDS, QUESTIONS),
        lambda b: qwen_video_inputs([QWEN_GRIDS[b]], [QUESTIONS[b]], seeds=[b]),
    ),
    VideoHost(
        "qwen3_vl",
        lambda: tiny_qwen3_vl()[0],
        lambda: qwen3_video_inputs(QWEN_GRIDS, QUESTIONS),
        lambda b: qwen3_video_inputs([QWEN_GRIDS[b]], [QUESTIONS[b]], seeds=[b]),
    ),
    VideoHost(
        "llava_onevision",
        lambda: tiny_onevision()[0],
        lambda: onevision_video_inputs(2, QUESTIONS, videos=ONEVISION_VIDEOS),
        lambda b: onevision_video_inputs(2, [QUESTIONS[b]], videos=ONEVISION_VIDEOS[b : b + 1]),
    ),
]


@pytest.fixture(params=HOSTS, ids=str)
def host(request):
    """The host's case and its model, uncompressed before and after the test."""
    model = request.param.model()
    for _ in uncompressed(model):
        yield request.param, model


def grow(call: dict, nxt: torch.Tensor) -> dict:
    step = dict(call)
    step["input_ids"] = torch.cat([call["input_ids"], nxt], 1)
    step["attention_mask"] = torch.cat([call["attention_mask"], torch.ones_like(nxt)], 1)
    if "mm_token_type_ids" in call:
        step["mm_token_type_ids"] = torch.cat([call["mm_token_type_ids"], torch.zeros_like(nxt)], 1)
    return step


@torch.no_grad()
@pytest.mark.parametrize("method", METHODS)
def test_ratio_one_and_remove_are_bit_identical(host, method):
    case, model = host
    call = case.batch()
    stock = model(**call).logits
    with vtc.compressed(model, vtc.config_for(model, method, ratio=1.0)):
        assert torch.equal(model(**call).logits, stock)
    handle = vtc.compress(model, vtc.config_for(model, method, ratio=RATIO))
    shorter = model(**call).logits
    assert shorter.shape[1] < stock.shape[1]
    assert all(s.media == "video" and s.tokens_after < s.tokens_before for s in handle.last_stats.images)
    handle.remove()
    assert torch.equal(model(**call).logits, stock)


@torch.no_grad()
@pytest.mark.parametrize("method", METHODS)
def test_batch_equals_one_by_one_and_greedy_equals_a_forward_loop(host, method):
    case, model = host
    call = case.batch()
    handle = vtc.compress(model, vtc.config_for(model, method, ratio=RATIO))
    out = model.generate(**call, max_new_tokens=2, do_sample=False)
    kept = [[v.positions for v in s.views] for s in handle.last_stats.images]
    step = call
    for _ in range(2):
        step = grow(step, model(**step).logits[:, -1].argmax(-1, keepdim=True))
    assert torch.equal(out, step["input_ids"])
    for b in range(2):
        alone = model.generate(**case.one(b), max_new_tokens=2, do_sample=False)
        assert [[v.positions for v in s.views] for s in handle.last_stats.images] == [kept[b]]
        assert torch.equal(out[b, -alone.shape[1] :], alone[0])


@torch.no_grad()
@pytest.mark.parametrize("method", VIDEO_ONLY)
@pytest.mark.parametrize(
    "mode",
    [
        dict(do_sample=True, top_k=5),
        dict(do_sample=True, top_k=5, num_return_sequences=2),
        dict(num_beams=2, do_sample=False),
        dict(num_beams=2, num_return_sequences=2, do_sample=False),
    ],
    ids=["sampling", "sampling-returns", "beams", "beams-returns"],
)
def test_sampling_and_beams_return_the_callers_prompt(host, method, mode):
    case, model = host
    call = case.batch()
    vtc.compress(model, method, ratio=RATIO)
    torch.manual_seed(0)
    out = model.generate(**call, max_new_tokens=2, **mode)
    n = mode.get("num_return_sequences", 1)
    assert out.shape == (2 * n, call["input_ids"].shape[1] + 2)
    assert torch.equal(out[:, : call["input_ids"].shape[1]], call["input_ids"].repeat_interleave(n, 0))


def test_every_family_that_declares_videos_runs_here():
    assert {h.name for h in HOSTS} == {s.name for s in host_specs() if s.video_inputs is not None}
