"""Run one vLLM engine over LLaVA-OneVision requests (images, clips, both) in its own process.

    python tests/helpers/vllm_onevision_runner.py SPEC.json  ->  stdout: VLLM_RESULTS {"results": [...]}

SPEC: {"model": dir, "hf_overrides": {...} or null, "max_tokens": int, "engine": {LLM kwargs},
"requests": [{"prompt": str, "images": [[w, h, seed], ...], "videos": [[frames, w, h, seed], ...],
"image_embeds": [tokens, width, seed] (instead of images),
"mm_processor_kwargs": {...} or null}], "refused": [requests as above]}. The requests run as one
batch; a result is {"tokens", "logprobs", "prompt_len"}. Then each of "refused" runs alone, and
its result is {"error": "<type>: <message>"} (or the output, if vLLM took it). The payload also
says how the engine ran ({"engine": {"tensor_parallel_size": n}}).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def vllm_prompt(r: dict) -> dict:
    """The ``LLM.generate`` prompt of one spec request."""
    from tests.conftest import make_image
    from tests.helpers.vllm_onevision import clip_frames

    data = {}
    if r.get("image_embeds"):  # [tokens, width, seed]: precomputed embeddings, seeded
        import torch

        n, width, seed = r["image_embeds"]
        # [1, tokens, width]: one image (vLLM reads a 2-D tensor as one image per row)
        data["image"] = torch.randn(1, n, width, generator=torch.Generator().manual_seed(seed)) * 0.05
    if r.get("images"):
        images = [make_image(w, h, seed=s) for w, h, s in r["images"]]
        data["image"] = images[0] if len(images) == 1 else images
    if r.get("videos"):
        videos = [clip_frames(n, w, h, s) for n, w, h, s in r["videos"]]
        data["video"] = videos[0] if len(videos) == 1 else videos
    prompt = {"prompt": r["prompt"], "multi_modal_data": data}
    if r.get("mm_processor_kwargs") is not None:
        prompt["mm_processor_kwargs"] = r["mm_processor_kwargs"]
    return prompt


def main(spec_path: str) -> None:
    from vllm import LLM, SamplingParams

    spec = json.loads(Path(spec_path).read_text())
    engine = {
        "max_model_len": 8192,
        "enforce_eager": True,
        "dtype": "float32",
        "limit_mm_per_prompt": {"image": 1, "video": 1},
        "seed": 0,
        **spec.get("engine", {}),
    }
    if spec.get("hf_overrides"):
        engine["hf_overrides"] = spec["hf_overrides"]
    llm = LLM(model=spec["model"], **engine)
    params = SamplingParams(temperature=0.0, max_tokens=spec.get("max_tokens", 8), logprobs=0)
    outputs = llm.generate([vllm_prompt(r) for r in spec["requests"]], params, use_tqdm=False)
    for r in spec.get("refused", []):
        try:
            outputs += llm.generate([vllm_prompt(r)], params, use_tqdm=False)
        except Exception as err:  # noqa: BLE001 - the refusal is the result
            outputs.append(f"{type(err).__name__}: {err}")
    results = []
    for o in outputs:
        if isinstance(o, str):
            results.append({"error": o})
            continue
        tokens = list(o.outputs[0].token_ids)
        # logprobs=0: each step's dict holds the sampled token's log-probability.
        logprobs = [step[t].logprob for t, step in zip(tokens, o.outputs[0].logprobs)]
        results.append({"tokens": tokens, "logprobs": logprobs, "prompt_len": len(o.prompt_token_ids)})
    sys.stdout.flush()
    parallel = llm.llm_engine.vllm_config.parallel_config
    engine_info = {"tensor_parallel_size": parallel.tensor_parallel_size}
    print("VLLM_RESULTS " + json.dumps({"results": results, "engine": engine_info}), flush=True)
    os._exit(0)  # skip vLLM's slow teardown; the results are out


if __name__ == "__main__":
    main(sys.argv[1])
