"""Run one vLLM engine over a list of image requests in its own process; print JSON results.

    python tests/helpers/vllm_runner.py SPEC.json   ->  stdout: {"results": [{"tokens": [...], "prompt_len": n}]}

SPEC: {"model": dir, "hf_overrides": {...} or null, "max_tokens": int, "engine": {LLM kwargs},
"requests": [{"size": [w, h], "seed": int, "prompt": str, "mm_processor_kwargs": {...} or null}]}.
A process of its own because vLLM's engine spawns workers and holds them until exit.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(spec_path: str) -> None:
    from vllm import LLM, SamplingParams

    from tests.conftest import make_image

    spec = json.loads(Path(spec_path).read_text())
    engine = {
        "max_model_len": 4096,
        "enforce_eager": True,
        "dtype": "float32",
        "limit_mm_per_prompt": {"image": 1},
        "seed": 0,
        **spec.get("engine", {}),
    }
    if spec.get("hf_overrides"):
        engine["hf_overrides"] = spec["hf_overrides"]
    llm = LLM(model=spec["model"], **engine)
    params = SamplingParams(temperature=0.0, max_tokens=spec.get("max_tokens", 8), logprobs=0)
    prompts = []
    for r in spec["requests"]:
        prompt = {
            "prompt": r["prompt"],
            "multi_modal_data": {"image": make_image(*r["size"], seed=r["seed"])},
        }
        if r.get("mm_processor_kwargs") is not None:
            prompt["mm_processor_kwargs"] = r["mm_processor_kwargs"]
        prompts.append(prompt)
    outputs = llm.generate(prompts, params, use_tqdm=False)
    results = []
    for o in outputs:
        tokens = list(o.outputs[0].token_ids)
        # logprobs=0: each step's dict holds the sampled token's log-probability.
        logprobs = [step[t].logprob for t, step in zip(tokens, o.outputs[0].logprobs)]
        results.append({"tokens": tokens, "logprobs": logprobs, "prompt_len": len(o.prompt_token_ids)})
    sys.stdout.flush()
    print("VLLM_RESULTS " + json.dumps({"results": results}), flush=True)
    os._exit(0)  # skip vLLM's slow teardown; the results are out


if __name__ == "__main__":
    main(sys.argv[1])
