"""Shared pieces of the vLLM LLaVA-OneVision tests: prompts, clips, the engine runner, and the
transformers reference (vtcompress's OneVision host on the same weights)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from tests.conftest import make_image
from tests.helpers.vllm_common import until_eos, vllm_env

ARCH = "VtcompressLlavaOnevisionForConditionalGeneration"
MAX_TOKENS = 8
RUNNER = Path(__file__).with_name("vllm_onevision_runner.py")


def prompt(images: int = 0, videos: int = 0) -> str:
    """A chat-formatted question about ``images`` images then ``videos`` clips (one token each)."""
    media = "<image>\n" * images + "<video>\n" * videos
    return f"<|im_start|>user\n{media}What is in it?<|im_end|>\n<|im_start|>assistant\n"


def clip_frames(frames: int, width: int, height: int, seed: int) -> np.ndarray:
    """A clip as vLLM takes it: uint8 [frames, height, width, 3], each frame a distinct test image."""
    return np.stack([np.asarray(make_image(width, height, seed=seed * 100 + t)) for t in range(frames)])


def run_vllm(tmp_path: Path, spec: dict, timeout: int = 1200, env: dict | None = None) -> list[dict]:
    """Run tests/helpers/vllm_onevision_runner.py on ``spec`` in a fresh process; its results."""
    return run_engine(tmp_path, spec, timeout, env)["results"]


def run_engine(tmp_path: Path, spec: dict, timeout: int = 1200, env: dict | None = None) -> dict:
    """The runner's whole payload: ``{"results": [...], "engine": {...}}`` (``env``: added variables)."""
    path = tmp_path / f"spec-{abs(hash(json.dumps(spec, sort_keys=True)))}.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(path)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=vllm_env() | (env or {}),
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("VLLM_RESULTS ")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"vLLM run failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
        )
    return json.loads(lines[-1].removeprefix("VLLM_RESULTS "))


def request(case: dict, per_request: bool = True) -> dict:
    """The runner's request for a case {"method", "ratio", "images": [[w, h, seed]], "videos": [[n, w, h, seed]]}."""
    options = {"vtcompress": {"method": case["method"], "ratio": case["ratio"]}} if per_request else None
    images, videos = case.get("images", []), case.get("videos", [])
    return {
        "prompt": prompt(len(images), len(videos)),
        "images": images,
        "videos": videos,
        "mm_processor_kwargs": options,
    }


@torch.no_grad()
def hf_generate(checkpoint: Path, cases: list[dict]) -> list[dict]:
    """Greedy tokens, log-probabilities and compressed prompt length of transformers + vtcompress
    (the OneVision host) for each case, in float32 on the same weights."""
    from transformers import AutoProcessor, LlavaOnevisionForConditionalGeneration

    import vtcompress

    model = LlavaOnevisionForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    out = []
    for case in cases:
        images = [make_image(w, h, seed=s) for w, h, s in case.get("images", [])]
        videos = [clip_frames(*v) for v in case.get("videos", [])]
        media = {"images": images} if images else {}
        media |= {"videos": videos} if videos else {}
        inputs = processor(text=[prompt(len(images), len(videos))], return_tensors="pt", **media)
        with vtcompress.compressed(model, case["method"], ratio=case["ratio"]) as handle:
            gen = model.generate(
                **inputs,
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
            stats = handle.last_stats
            length = stats.samples[0].length_after if stats is not None else inputs["input_ids"].shape[1]
        tokens = until_eos(gen.sequences[0, inputs["input_ids"].shape[1] :].tolist())
        logprobs = [torch.log_softmax(step[0].double(), -1)[t].item() for t, step in zip(tokens, gen.logits)]
        out.append({"tokens": tokens, "logprobs": logprobs, "prompt_len": length})
    return out
