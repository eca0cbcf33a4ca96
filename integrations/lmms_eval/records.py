"""Per-sample records of what compression did, as logged next to each lmms-eval answer.

One record per request (sample): its images' visual tokens before and after compression (newline
tokens excluded, the ``ratio`` convention, and counted apart), prompt lengths, the decoder's
analytic prefill FLOPs before and after, the timings of the batch the sample ran in, and
``failed`` False. A sample the model could not process has ``failed`` True and its ``error``
instead (:func:`failed_record`).
Pure functions of vtcompress stats: no lmms-eval import here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from vtcompress.flops import decoder_prefill_flops
from vtcompress.stats import ImageStats, SampleStats


@dataclass
class BatchTiming:
    """Wall-clock seconds of one ``generate`` call, shared by every sample of the batch.

    vision: CLIP tower; compress: the method plus packing; prefill: from the call until the first
    token's logits (vision and compression included); generate: the whole call.
    """

    batch_size: int
    vision_seconds: float = 0.0
    compress_seconds: float = 0.0
    prefill_seconds: float = 0.0
    generate_seconds: float = 0.0


def image_entry(stats: ImageStats) -> dict[str, Any]:
    """One image (or one video clip: ``media`` "video", ``time_steps`` and ``views_kept`` per time step:
    a frame, or a temporal patch of 2 frames on Qwen2.5-VL)
    as the host measured it."""
    video = {"media": "video", "time_steps": len(stats.views)} if stats.media == "video" else {}
    return {
        **video,
        "image_size": list(stats.image_size),
        "grid": list(stats.grid),
        "tokens_before": stats.tokens_before,
        "tokens_kept": stats.tokens_after,
        "newlines_before": stats.newlines_before,
        "newlines_kept": stats.newlines_after,
        "views_kept": [v.kept for v in stats.views],
        "compress_seconds": stats.seconds,
        "passthrough": stats.passthrough,
    }


def uncompressed_image_entry(
    image_size: tuple[int, int], grid: tuple[int, int], view_counts: list[int], newlines: int
) -> dict[str, Any]:
    """One image fed whole (ratio 1.0): counts from the layout rule the model's adapter uses.

    ``view_counts``: visual tokens per view (newlines excluded); ``newlines``: the image's
    separator tokens (LLaVA-NeXT's row newlines, DocOwl's per-view ``vit_eos``).
    """
    tokens = sum(view_counts)
    return {
        "image_size": [int(x) for x in image_size],
        "grid": [int(x) for x in grid],
        "tokens_before": tokens,
        "tokens_kept": tokens,
        "newlines_before": newlines,
        "newlines_kept": newlines,
        "views_kept": list(view_counts),
        "compress_seconds": 0.0,
        "passthrough": True,
    }


def prompt_fields(sample: SampleStats | None, length: int, text_config: Any) -> dict[str, Any]:
    """A record's prompt lengths and decoder prefill FLOPs: from the sample's compression stats,
    or, where nothing was compressed (``sample`` None), its ``length`` tokens on both sides."""
    if sample is not None:
        return {
            "prompt_tokens_before": int(sample.length_before),
            "prompt_tokens_after": int(sample.length_after),
            "prefill_flops_before": sample.prefill_flops_before,
            "prefill_flops_after": sample.prefill_flops_after,
        }
    flops = decoder_prefill_flops(text_config, length)
    return {
        "prompt_tokens_before": length,
        "prompt_tokens_after": length,
        "prefill_flops_before": flops,
        "prefill_flops_after": flops,
    }


def sample_record(
    *,
    method: str,
    ratio: float,
    images: list[dict[str, Any]],
    prompt_tokens_before: int,
    prompt_tokens_after: int,
    prefill_flops_before: float,
    prefill_flops_after: float,
    output_tokens: int,
    timing: BatchTiming,
) -> dict[str, Any]:
    """The record of one sample; ``visual_tokens_*`` sum its images (newlines excluded)."""
    before = sum(im["tokens_before"] for im in images)
    kept = sum(im["tokens_kept"] for im in images)
    return {
        "method": method,
        "ratio": ratio,
        "visual_tokens_before": before,
        "visual_tokens_kept": kept,
        "newline_tokens_kept": sum(im["newlines_kept"] for im in images),
        "kept_fraction": kept / before if before else 1.0,
        "prompt_tokens_before": prompt_tokens_before,
        "prompt_tokens_after": prompt_tokens_after,
        "prefill_flops_before": prefill_flops_before,
        "prefill_flops_after": prefill_flops_after,
        "output_tokens": output_tokens,
        "images": images,
        "timing": asdict(timing),
        "failed": False,
        "error": None,
    }


def failed_record(
    *, method: str, ratio: float, error: BaseException, doc_id: Any, task: str
) -> dict[str, Any]:
    """The record of a sample the model could not answer: what went wrong, on which document.

    ``error`` is the exception's type and first line (at most 500 characters); the sample's
    answer is empty and its scores count it as wrong.
    """
    lines = str(error).strip().splitlines()
    message = f"{type(error).__name__}: {lines[0] if lines else ''}".strip().rstrip(":")
    return {
        "method": method,
        "ratio": ratio,
        "failed": True,
        "error": message[:500],
        "task": task,
        "doc_id": doc_id,
    }
