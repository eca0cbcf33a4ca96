"""Run one vLLM engine over Qwen requests (images and clips) in its own process; print JSON.

    python tests/helpers/vllm_qwen_runner.py SPEC.json  ->  stdout: VLLM_RESULTS {"results": [...]}

SPEC: {"model": dir, "hf_overrides": {...} or null, "max_tokens": int, "engine": {LLM kwargs},
"batches": [[request, ...], ...]}; a request: {"prompt": str, "images": [[w, h, seed], ...],
"videos": [[w, h, frames, seed], ...], "image_embeds": bool, "mm_processor_kwargs": {...} or
null}. Each batch is one ``LLM.generate`` call; a batch that raises gives one
``{"error": message}`` per request (bad-request tests send one request per batch).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(spec_path: str) -> None:
    from vllm import LLM, SamplingParams

    from tests.helpers import vllm_qwen_media as media

    spec = json.loads(Path(spec_path).read_text())
    engine = {
        "max_model_len": 4096,
        "enforce_eager": True,
        "dtype": "float32",
        "limit_mm_per_prompt": {"image": 2, "video": 2},
        "seed": 0,
        **spec.get("engine", {}),
    }
    if spec.get("hf_overrides"):
        engine["hf_overrides"] = spec["hf_overrides"]
    llm = LLM(model=spec["model"], **engine)
    params = SamplingParams(temperature=0.0, max_tokens=spec.get("max_tokens", 8), logprobs=0)
    results = []
    for batch in spec["batches"]:
        prompts = []
        for r in batch:
            data = {}
            if r.get("images"):
                data["image"] = [media.image(s) for s in r["images"]]
            if r.get("videos"):
                data["video"] = [(media.clip(s), media.metadata(s[2])) for s in r["videos"]]
            if r.get("image_embeds"):
                import torch

                data["image"] = {
                    "image_embeds": torch.zeros(16, 128),
                    "image_grid_thw": torch.tensor([[1, 8, 8]]),
                }
            prompt = {"prompt": r["prompt"], "multi_modal_data": data}
            if r.get("mm_processor_kwargs") is not None:
                prompt["mm_processor_kwargs"] = r["mm_processor_kwargs"]
            prompts.append(prompt)
        try:
            outputs = llm.generate(prompts, params, use_tqdm=False)
        except Exception as err:  # noqa: BLE001 - reported to the test, which checks the message
            results += [{"error": f"{type(err).__name__}: {err}"} for _ in batch]
            continue
        for o in outputs:
            tokens = list(o.outputs[0].token_ids)
            logprobs = [step[t].logprob for t, step in zip(tokens, o.outputs[0].logprobs)]
            results.append({"tokens": tokens, "logprobs": logprobs, "prompt_len": len(o.prompt_token_ids)})
    sys.stdout.flush()
    print("VLLM_RESULTS " + json.dumps({"results": results}), flush=True)
    os._exit(0)  # skip vLLM's slow teardown; the results are out


if __name__ == "__main__":
    main(sys.argv[1])
