"""Shared pieces of the vLLM Qwen tests: tiny checkpoints, prompts, the engine runner and the
transformers reference (vtcompress's transformers host on the same weights and inputs)."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import torch

from tests.helpers import vllm_qwen_media as media
from tests.helpers.vllm_common import until_eos, vllm_env

RUNNER = Path(__file__).with_name("vllm_qwen_runner.py")
ARCH = {
    "qwen2_5_vl": "VtcompressQwen2_5_VLForConditionalGeneration",
    "qwen3_vl": "VtcompressQwen3VLForConditionalGeneration",
}
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"
VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
MAX_TOKENS = 8


def prompt(*parts: str, question: str = "What is shown?") -> str:
    """``parts`` (IMAGE / VIDEO markers, in order) and a question in the tiny models' turn."""
    return f"USER: {''.join(parts)}{question}\nASSISTANT:"


def request(text: str, images=(), videos=(), settings: dict | None = None) -> dict:
    return {
        "prompt": text,
        "images": [list(i) for i in images],
        "videos": [list(v) for v in videos],
        "mm_processor_kwargs": {"vtcompress": settings} if settings is not None else None,
    }


def run_vllm(tmp_path: Path, spec: dict, timeout: int = 1200) -> list[dict]:
    """Run tests/helpers/vllm_qwen_runner.py on ``spec`` in a fresh process; its results."""
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=vllm_env(),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("VLLM_RESULTS ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"vLLM run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return json.loads(lines[-1].removeprefix("VLLM_RESULTS "))["results"]


def hf_inputs(processor, req: dict) -> dict:
    kwargs = {}
    if req["images"]:
        kwargs["images"] = [media.image(s) for s in req["images"]]
    if req["videos"]:
        from transformers.video_utils import VideoMetadata

        kwargs["videos"] = [media.clip(s) for s in req["videos"]]
        kwargs["video_metadata"] = [VideoMetadata(**media.metadata(s[2])) for s in req["videos"]]
        kwargs["do_sample_frames"] = False
    return processor(text=[req["prompt"]], return_tensors="pt", **kwargs)


@torch.no_grad()
def hf_generate(checkpoint: Path, family: str, requests: list[dict]) -> list[dict]:
    """Greedy tokens, their log-probabilities and the compressed prompt length of transformers +
    vtcompress for each request (its ``mm_processor_kwargs`` settings), float32, same weights."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    import vtcompress

    model = AutoModelForImageTextToText.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    out = []
    for req in requests:
        inputs = hf_inputs(processor, req)
        options = dict((req["mm_processor_kwargs"] or {}).get("vtcompress", {}))
        method = options.pop("method")
        # ratio 1.0 is the stock model (the Qwen3-VL host refuses clips beside images even then)
        stock = options.get("ratio") == 1.0
        with contextlib.nullcontext() if stock else vtcompress.compressed(model, method, **options) as handle:
            gen = model.generate(
                **inputs,
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
            length = inputs["input_ids"].shape[1] if stock else handle.last_stats.samples[0].length_after
        tokens = until_eos(gen.sequences[0, inputs["input_ids"].shape[1] :].tolist())
        logprobs = [torch.log_softmax(step[0].double(), -1)[t].item() for t, step in zip(tokens, gen.logits)]
        out.append({"tokens": tokens, "logprobs": logprobs, "prompt_len": length})
    return out
