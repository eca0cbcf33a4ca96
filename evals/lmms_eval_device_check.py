"""The lmms-eval models on a GPU: placement, dtypes, batching, records, and prefill time at 7B widths.

    python evals/lmms_eval_device_check.py [--out DIR]

Part 1, tiny random LLaVA-NeXT and DocOwl1.5 (offline), float32 and bfloat16, ratio 1.0 and 0.25:
the model and its inputs sit on the GPU, every answer is non-empty, every image keeps
``floor(r N)`` visual tokens, and batch 4 gives the same answers as batch 1 (printed, not assumed,
for bfloat16). Part 2: a LLaVA-NeXT with real widths (CLIP ViT-L/14-336, a 4096-wide decoder) but
random weights and --decoder-layers decoder layers (2 by default; 32 is the 7B depth), through the lmms-eval model, on the offline document images:
mean prefill seconds and analytic prefill FLOPs per ratio, measured in this one run.
Everything is built here with random weights; nothing is downloaded.
"""

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


def save_wide_llava(path: Path, decoder_layers: int = 2) -> Path:
    """LLaVA-NeXT with LLaVA-v1.6-7B widths (CLIP ViT-L/14-336, 4096 decoder), random weights."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextForConditionalGeneration

    from vtcompress.integrations.llava_next import tiny

    processor = tiny.build_processor()
    tok = processor.tokenizer
    config = tiny.build_config(len(tok), tok.convert_tokens_to_ids(tiny.IMAGE_TOKEN), tok.pad_token_id)
    config.text_config = LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=decoder_layers,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=len(tok),
        max_position_embeddings=8192,
        pad_token_id=tok.pad_token_id,
        bos_token_id=1,
        eos_token_id=2,
    )
    config.vision_config = CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        projection_dim=768,
    )
    device = "cuda" if torch.cuda.is_available() else "cpu"  # random init of 7B weights: GPU is faster
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(0)
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            model = LlavaNextForConditionalGeneration(config)
        finally:
            torch.set_default_dtype(default)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(path)
    processor.save_pretrained(path)
    del model
    return path


def prefill_timing(path: Path, ratios: list[float], count: int, batch_sizes: list[int]) -> list[dict]:
    """Mean per-sample prefill time (batch time, shared by its samples) for each ratio and batch size."""
    from vtcompress.integrations.lmms_eval.llava_next_model import CompressedLlavaNext

    rows = []
    for ratio in ratios:
        lmm = CompressedLlavaNext(pretrained=str(path), method="globalcom2", ratio=ratio, dtype="bfloat16")
        task_dict, reqs = requests("document", count, max_new_tokens=1)
        lmm.task_dict = task_dict
        for batch_size in batch_sizes:
            lmm.batch_size_per_device = batch_size
            lmm.generate_until(reqs[:batch_size])  # warm-up: kernels, allocator
            records = [r.token_counts.vtcompress for r in lmm.generate_until(reqs)]
            n = len(records)
            rows.append(
                {
                    "decoder_layers": lmm.model.config.text_config.num_hidden_layers,
                    "batch_size": batch_size,
                    "ratio": ratio,
                    "kept_fraction": sum(r["visual_tokens_kept"] for r in records)
                    / sum(r["visual_tokens_before"] for r in records),
                    "visual_tokens_kept": sum(r["visual_tokens_kept"] for r in records) / n,
                    "prompt_tokens": sum(r["prompt_tokens_after"] for r in records) / n,
                    "prefill_s_per_batch": sum(r["timing"]["prefill_seconds"] for r in records) / n,
                    "prefill_s_per_sample": sum(r["timing"]["prefill_seconds"] / batch_size for r in records)
                    / n,
                    "vision_s_per_batch": sum(r["timing"]["vision_seconds"] for r in records) / n,
                    "compress_s_per_batch": sum(r["timing"]["compress_seconds"] for r in records) / n,
                    "prefill_tflops_per_sample": sum(r["prefill_flops_after"] for r in records) / n / 1e12,
                }
            )
            print(json.dumps(rows[-1]))
        del lmm
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="/tmp/vtc_device_check")
    parser.add_argument("--samples", type=int, default=16, help="documents timed per ratio in part 2")
    parser.add_argument("--skip-wide", action="store_true", help="part 1 only")
    parser.add_argument("--skip-tiny", action="store_true", help="part 2 only")
    parser.add_argument("--decoder-layers", type=int, default=2, help="part 2 decoder depth (32 = 7B)")
    parser.add_argument("--batch-sizes", default="1", help="part 2 batch sizes, comma-separated")
    parser.add_argument("--ratios", default="1.0,0.5,0.25,0.111", help="part 2 ratios")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from vtcompress.integrations.docowl.tiny import save_tiny_docowl
    from vtcompress.integrations.llava_next.tiny import save_tiny_llava_next
    from vtcompress.integrations.lmms_eval.docowl_model import CompressedDocOwl
    from vtcompress.integrations.lmms_eval.llava_next_model import CompressedLlavaNext

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (no CUDA)"
    print(f"device: {device}; torch {torch.__version__}")
    results = []
    tiny_models = (
        []
        if args.skip_tiny
        else [
            (CompressedLlavaNext, save_tiny_llava_next(out / "tiny-llava"), "shapes"),
            (CompressedDocOwl, save_tiny_docowl(out / "tiny-docowl"), "document"),
        ]
    )
    for cls, path, kind in tiny_models:
        for dtype in ("float32", "bfloat16"):
            for ratio in (1.0, 0.25):
                start = time.perf_counter()
                row = check_model(cls, path, dtype, ratio, kind)
                row["seconds"] = round(time.perf_counter() - start, 2)
                results.append(row)
                print(json.dumps(row))
    if not args.skip_wide:
        wide = save_wide_llava(out / "wide-llava", args.decoder_layers)
        ratios = [float(r) for r in args.ratios.split(",")]
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        results += prefill_timing(wide, ratios, args.samples, batch_sizes)
    (out / "results.json").write_text(json.dumps({"device": device, "results": results}, indent=1))


if __name__ == "__main__":
    main()
