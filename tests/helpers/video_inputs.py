"""Video inputs for the tiny Qwen2.5-VL, Qwen3-VL and LLaVA-OneVision, built without the video processors
(they need torchvision): the tensors the processor would give and the prompt's placeholder run."""

from __future__ import annotations

import functools

import torch

from tests.conftest import tiny_qwen2_5_vl, tiny_qwen3_vl

QWEN_PATCH_VALUES = 3 * 2 * 14 * 14  # channels x temporal patch x 14 x 14 px
ONEVISION_PER_FRAME = 196  # 384 px, 14 px patches: 27 x 27 pooled 2x2 to 14 x 14


def left_padded(tok, texts: list[str]):
    side, tok.padding_side = tok.padding_side, "left"
    try:
        return tok(texts, return_tensors="pt", padding=True)
    finally:
        tok.padding_side = side


# --- Qwen2.5-VL --------------------------------------------------------------------------------------
def qwen_video_run(grid) -> str:
    """The placeholder run of a clip of ``video_grid_thw`` row ``grid`` = (t, h, w) patches."""
    from vtcompress.integrations.qwen2_5_vl.tiny import VIDEO_TOKEN, VISION_END, VISION_START

    t, h, w = grid
    return VISION_START + VIDEO_TOKEN * (t * h * w // 4) + VISION_END


def qwen_clip_pixels(grid, seed: int) -> torch.Tensor:
    t, h, w = grid
    return torch.randn(t * h * w, QWEN_PATCH_VALUES, generator=torch.Generator().manual_seed(seed))


def qwen_video_inputs(grids, questions=None, seconds=None, seeds=None) -> dict:
    """One clip per prompt, left padded."""
    model, processor = tiny_qwen2_5_vl()
    questions = questions or ["What happens?"] * len(grids)
    enc = left_padded(
        processor.tokenizer, [f"USER: {qwen_video_run(g)}{q}\nASSISTANT:" for g, q in zip(grids, questions)]
    )
    ids = enc["input_ids"]
    seeds = seeds or list(range(len(grids)))
    return dict(
        input_ids=ids,
        attention_mask=enc["attention_mask"],
        mm_token_type_ids=(ids == model.config.video_token_id).long() * 2,
        pixel_values_videos=torch.cat([qwen_clip_pixels(g, s) for g, s in zip(grids, seeds)]),
        video_grid_thw=torch.tensor(grids),
        second_per_grid_ts=torch.tensor(seconds or [1.0] * len(grids)),
    )


# --- Qwen3-VL ---------------------------------------------------------------------------------------
QWEN3_PATCH_VALUES = 3 * 2 * 16 * 16


def qwen3_clip_text(grid, seconds: float = 1.0) -> str:
    """A clip's prompt text as Qwen3VLProcessor writes it: per temporal patch j its timestamp (the
    mean of its two frames' times, frames ``seconds`` apart) and its own run of h*w/4 video
    placeholders between the vision markers."""
    t, h, w = grid
    run = "<|vision_start|>" + "<|video_pad|>" * (h * w // 4) + "<|vision_end|>"
    return "".join(f"<{(2 * j + 0.5) * seconds:.1f} seconds>" + run for j in range(t))


def qwen3_video_inputs(grids, questions=None, seeds=None, seconds=1.0) -> dict:
    """One clip per prompt, left padded (Qwen3-VL has no second_per_grid_ts: time is in the text)."""
    model, processor = tiny_qwen3_vl()
    questions = questions or ["What happens?"] * len(grids)
    texts = [f"USER: {qwen3_clip_text(g, seconds)}{q}\nASSISTANT:" for g, q in zip(grids, questions)]
    enc = left_padded(processor.tokenizer, texts)
    ids = enc["input_ids"]
    seeds = seeds or list(range(len(grids)))
    pixels = [
        torch.randn(t * h * w, QWEN3_PATCH_VALUES, generator=torch.Generator().manual_seed(s))
        for (t, h, w), s in zip(grids, seeds)
    ]
    return dict(
        input_ids=ids,
        attention_mask=enc["attention_mask"],
        mm_token_type_ids=(ids == model.config.video_token_id).long() * 2,
        pixel_values_videos=torch.cat(pixels),
        video_grid_thw=torch.tensor(grids),
    )


# --- LLaVA-OneVision -----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def tiny_onevision():
    from vtcompress.integrations.llava_onevision.tiny import build_tiny_onevision

    return build_tiny_onevision(seed=0)


def onevision_text(frames: int, question: str, image: bool = False) -> str:
    from vtcompress.integrations.llava_onevision.tiny import VIDEO_TOKEN

    return (
        "<|im_start|>user\n"
        + ("<image>\n" if image else "")
        + VIDEO_TOKEN * (frames * ONEVISION_PER_FRAME + 1)
        + f"\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )


def onevision_pixels(videos: int, frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(videos, frames, 3, 384, 384, generator=torch.Generator().manual_seed(seed))


def onevision_video_inputs(frames: int, questions: list[str], seed: int = 0, videos=None) -> dict:
    """One clip per prompt (every clip of a call has ``frames`` frames), left padded."""
    enc = left_padded(tiny_onevision()[1].tokenizer, [onevision_text(frames, q) for q in questions])
    videos = onevision_pixels(len(questions), frames, seed) if videos is None else videos
    return dict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], pixel_values_videos=videos)
