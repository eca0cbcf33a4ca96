"""Throughput of a vLLM-served compressed family at several ratios.

    .venv-vllm/bin/python evals/bench_vllm.py [--family llava_next] [--model DIR] [--method globalcom2] [--requests 32]

One vLLM engine (``LLM``, the engine ``vllm serve`` runs) with the vtcompress architecture; each
ratio is asked for per request (``mm_processor_kwargs``), so every ratio runs on the same engine.
Per ratio: a warm-up batch, then ``--requests`` requests of mixed image sizes (``--media video``:
8-frame clips, on families whose vLLM model takes videos) with one output token each
(prefill-bound), timed end to end. Prints requests/s and prefill tokens/s (prompt
tokens, images included, per second) as JSON lines. ``--family`` is a family with a vLLM model
(``HostSpec.vllm_architecture``): ``llava_next``, ``llava_onevision``, ``qwen2_5_vl`` or
``qwen3_vl`` (``--method uniform``: the Qwen families serve no globalcom2). Without ``--model`` it
builds the family's tiny random checkpoint, whose numbers show the mechanics, not a real model's
speed. Extra engine flags (e.g. ``--tensor-parallel-size 2``) go after ``--``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.conftest's test images

RATIOS = (1.0, 0.5, 0.25, 0.1)
SIZES = [(672, 672), (1000, 500), (300, 900), (500, 300), (300, 700)]
CLIP_FRAMES = 8  # --media video: clips of this many frames, each a test image of one of SIZES
QWEN_SAVER = "vtcompress.integrations.vllm.qwen_tiny:save_tiny_qwen_for_vllm"
QWEN_CHAT = "<|im_start|>user\nRequest {{}}. <|vision_start|><|{}_pad|><|vision_end|>{}<|im_end|>\n<|im_start|>assistant\n"
# Per family: its tiny checkpoint's saver (and the saver's leading arguments) and a one-image prompt
# in its chat format ({} the request).
FAMILIES = {
    "llava_next": (
        "vtcompress.integrations.vllm.tiny:save_tiny_for_vllm",
        (),
        "Request {}. USER: <image>\nWhat is in the image? ASSISTANT:",
    ),
    "llava_onevision": (
        "vtcompress.integrations.vllm.onevision_tiny:save_tiny_onevision_for_vllm",
        (),
        "<|im_start|>user\nRequest {}. <image>\nWhat is in the image?<|im_end|>\n<|im_start|>assistant\n",
    ),
    "qwen2_5_vl": (QWEN_SAVER, ("qwen2_5_vl",), QWEN_CHAT.format("image", "What is in the image?")),
    "qwen3_vl": (QWEN_SAVER, ("qwen3_vl",), QWEN_CHAT.format("image", "What is in the image?")),
}


# Families whose vLLM model takes videos: a one-clip prompt.
VIDEO_PROMPTS = {
    "llava_onevision": "<|im_start|>user\nRequest {}. <video>\nWhat happens?<|im_end|>\n<|im_start|>assistant\n",
}


def architecture(family: str) -> str:
    """The family's vLLM architecture, as its HostSpec declares it."""
    from vtcompress.hosts import host_specs

    return next(s.vllm_architecture for s in host_specs() if s.name == family)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--family", choices=sorted(FAMILIES), default="llava_next")
    parser.add_argument("--model", help="checkpoint of the family (default: its tiny random one)")
    parser.add_argument(
        "--media", choices=("image", "video"), default="image", help="what each request carries"
    )
    parser.add_argument("--method", default="globalcom2")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("engine", nargs="*", help="extra LLM keyword arguments as key=JSON, after --")
    args = parser.parse_args()
    if args.media == "video" and args.family not in VIDEO_PROMPTS:
        parser.error(f"--media video: the vLLM model of {args.family} takes images only")

    import numpy as np
    from vllm import LLM, SamplingParams

    from tests.conftest import make_image

    saver, saver_args, prompt = FAMILIES[args.family]
    prompt = VIDEO_PROMPTS[args.family] if args.media == "video" else prompt
    module, _, name = saver.partition(":")
    save_tiny = getattr(importlib.import_module(module), name)
    model = args.model or str(save_tiny(*saver_args, tempfile.mkdtemp() + f"/tiny-{args.family}"))
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.engine)}
    llm = LLM(
        model=model,
        hf_overrides={
            "architectures": [architecture(args.family)],
            "vtcompress": {"method": args.method, "ratio": 1.0},
        },
        dtype=args.dtype,
        max_model_len=8192,
        limit_mm_per_prompt={args.media: 1},
        seed=0,
        **extra,
    )
    params = SamplingParams(temperature=0.0, max_tokens=1)
    machine = f"{platform.machine()} {os.cpu_count()}-core CPU" if not _cuda() else _cuda()

    def media(i: int, seed: int):
        if args.media == "image":
            return make_image(*SIZES[i % len(SIZES)], seed=seed)
        frames = [make_image(*SIZES[i % len(SIZES)], seed=seed * 100 + t) for t in range(CLIP_FRAMES)]
        return np.stack([np.asarray(f) for f in frames])  # uint8 [frames, height, width, 3]

    def batch(ratio: float, seed: int, count: int) -> list[dict]:
        # Fresh images and a distinct opening per request: neither the prefix cache nor the
        # encoder cache can skip work that another batch already did.
        return [
            {
                "prompt": prompt.format(seed + i),
                "multi_modal_data": {args.media: media(i, seed + i)},
                "mm_processor_kwargs": {"vtcompress": {"method": args.method, "ratio": ratio}},
            }
            for i in range(count)
        ]

    for n, ratio in enumerate(RATIOS):
        llm.generate(batch(ratio, 100_000 * n, 4), params, use_tqdm=False)  # warm-up
        prompts = batch(ratio, 100_000 * n + 1000, args.requests)
        start = time.perf_counter()
        outputs = llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        tokens = sum(len(o.prompt_token_ids) for o in outputs)
        print(
            json.dumps(
                {
                    "family": args.family,
                    "media": args.media if args.media == "image" else f"{CLIP_FRAMES}-frame clips",
                    "method": args.method,
                    "ratio": ratio,
                    "requests": len(prompts),
                    "seconds": round(seconds, 3),
                    "requests_per_s": round(len(prompts) / seconds, 3),
                    "prefill_tokens_per_s": round(tokens / seconds, 1),
                    "prompt_tokens_mean": round(tokens / len(prompts), 1),
                    "machine": machine,
                    "model": f"tiny random {args.family}" if not args.model else model,
                }
            ),
            flush=True,
        )
    os._exit(0)  # vLLM's teardown adds nothing to the numbers


def _cuda() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


if __name__ == "__main__":
    main()
