"""The lmms-eval models on a GPU: placement, dtypes, batching and records.

    python evals/lmms_eval_device_check.py [--out DIR]

Tiny random LLaVA-NeXT and DocOwl1.5 (built offline), float32 and bfloat16, ratio 1.0 and 0.25,
through the lmms-eval models: the model and its inputs sit on the GPU, every answer is non-empty,
every image keeps ``floor(r N)`` visual tokens, and batch 4 gives the same answers as batch 1
(printed, not assumed, for bfloat16). Needs lmms-eval (the eval environment); prefill cost at
LLaVA-NeXT-7B widths is ``python -m evals.bench --preset gpu``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def _synthetic():
    spec = importlib.util.spec_from_file_location(
        "vtc_synthetic", HERE / "tasks" / "vtc_offline" / "synthetic.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def requests(kind: str, count: int, max_new_tokens: int = 8):
    """lmms-eval Instances over generated samples, plus the task_dict they point into."""
    from lmms_eval.api.instance import Instance

    docs = [s.record() for s in _synthetic().generate(kind, count)]
    gen = {"max_new_tokens": max_new_tokens, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    reqs = [
        Instance(
            "generate_until",
            (d["question"], dict(gen), lambda doc: [doc["image"]], i, "t", "test"),
            idx=0,
            metadata={"task": "t", "doc_id": i, "repeats": 1},
        )
        for i, d in enumerate(docs)
    ]
    return {"t": {"test": docs}}, reqs


def check_model(cls, path: Path, dtype: str, ratio: float, kind: str) -> dict:
    from vtcompress.budget import keep_count

    lmm = cls(pretrained=str(path), method="globalcom2", ratio=ratio, batch_size=4, dtype=dtype)
    task_dict, reqs = requests(kind, 8)
    lmm.task_dict = task_dict
    param = next(lmm.model.parameters())
    batched = lmm.generate_until(reqs)
    lmm.batch_size_per_device = 1
    single = lmm.generate_until(reqs)
    records = [r.token_counts.vtcompress for r in batched]
    rule = all(
        im["tokens_kept"] == keep_count(im["tokens_before"], ratio) for rec in records for im in rec["images"]
    )
    return {
        "model": cls.__name__,
        "dtype": dtype,
        "ratio": ratio,
        "device": f"{lmm.device} / params on {param.device} {param.dtype}",
        "non_empty": all(r.text.strip() for r in batched),
        "kept_rule": rule,
        "batch4_equals_batch1": [r.text for r in batched] == [r.text for r in single],
        "kept_fraction": sum(r["visual_tokens_kept"] for r in records)
        / sum(r["visual_tokens_before"] for r in records),
        "prefill_s_batch4": sum(r["timing"]["prefill_seconds"] for r in records) / len(records),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/vtc_device_check", help="tiny models and results.json")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from vtcompress.integrations.docowl.eval_model import CompressedDocOwl
    from vtcompress.integrations.docowl.tiny import save_tiny_docowl
    from vtcompress.integrations.llava_next.eval_model import CompressedLlavaNext
    from vtcompress.integrations.llava_next.tiny import save_tiny_llava_next

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA)"
    print(f"device: {device}; torch {torch.__version__}")
    results = []
    tiny_models = [
        (CompressedLlavaNext, save_tiny_llava_next(out / "tiny-llava"), "shapes"),
        (CompressedDocOwl, save_tiny_docowl(out / "tiny-docowl"), "document"),
    ]
    for cls, path, kind in tiny_models:
        for dtype in ("float32", "bfloat16"):
            for ratio in (1.0, 0.25):
                start = time.perf_counter()
                row = check_model(cls, path, dtype, ratio, kind)
                row["seconds"] = round(time.perf_counter() - start, 2)
                results.append(row)
                print(json.dumps(row))
    (out / "results.json").write_text(json.dumps({"device": device, "results": results}, indent=1))


if __name__ == "__main__":
    main()
