"""Shared pieces of the vLLM tests: the tiny checkpoint, prompts, the independent count rule,
and the transformers reference (vtcompress's transformers host on the same weights)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from tests.conftest import make_image
from vtcompress.budget import keep_count
from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.integrations.llava_next.tiny import PINPOINTS

ARCH = "VtcompressLlavaNextForConditionalGeneration"
PROMPT = "USER: <image>\nWhat is in the image? ASSISTANT:"
MAX_TOKENS = 8
EOS = 2
RUNNER = Path(__file__).with_name("vllm_runner.py")
METHODS = ["globalcom2", "fastervlm", "uniform", "random", "tokencorr", "pitome", "tome"]
RATIOS = [0.5, 0.25, 0.1]
# (width, height): a letterboxed wide image, a tall 1x3 grid, a wide 2x1 grid.
SIZES = [(500, 300), (300, 900), (1000, 500)]


def rule_count(width: int, height: int, ratio: float) -> int:
    """Placeholder tokens of one image by docs/budget.md: floor(ratio N) kept + one newline per
    unpadded row (N and the rows from the image's anyres layout; everything at ratio 1)."""
    layout = AnyResLayout.for_image((height, width), PINPOINTS)
    return keep_count(layout.num_tokens(), ratio) + layout.num_newlines("unpadded")


def text_tokens(tokenizer, prompt: str = PROMPT) -> int:
    """Prompt tokens besides the image's run (the single <image> token is replaced)."""
    return len(tokenizer(prompt)["input_ids"]) - 1


def until_eos(tokens: list[int]) -> list[int]:
    return tokens[: tokens.index(EOS) + 1] if EOS in tokens else tokens


def vllm_env() -> dict[str, str]:
    return {
        **os.environ,
        "OMP_NUM_THREADS": "2",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    }


def run_vllm(tmp_path: Path, spec: dict, timeout: int = 900) -> list[dict]:
    """Run tests/helpers/vllm_runner.py on ``spec`` in a fresh process; its per-request results."""
    path = tmp_path / f"spec-{abs(hash(json.dumps(spec, sort_keys=True)))}.json"
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


@torch.no_grad()
def hf_generate(checkpoint: Path, cases: list[tuple[str, float, tuple[int, int], int]]) -> list[dict]:
    """Greedy tokens and compressed prompt length of transformers + vtcompress for each
    ``(method, ratio, (width, height), seed)``, in float32 on the same weights."""
    from transformers import AutoProcessor, LlavaNextForConditionalGeneration

    import vtcompress

    model = LlavaNextForConditionalGeneration.from_pretrained(checkpoint, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(checkpoint)
    out = []
    for method, ratio, (w, h), seed in cases:
        inputs = processor(images=[make_image(w, h, seed=seed)], text=[PROMPT], return_tensors="pt")
        with vtcompress.compressed(model, method, ratio=ratio) as handle:
            gen = model.generate(
                **inputs,
                max_new_tokens=MAX_TOKENS,
                do_sample=False,
                output_logits=True,
                return_dict_in_generate=True,
            )
            length = handle.last_stats.samples[0].length_after
        tokens = until_eos(gen.sequences[0, inputs["input_ids"].shape[1] :].tolist())
        logprobs = [torch.log_softmax(step[0].double(), -1)[t].item() for t, step in zip(tokens, gen.logits)]
        out.append({"tokens": tokens, "logprobs": logprobs, "prompt_len": length})
    return out
