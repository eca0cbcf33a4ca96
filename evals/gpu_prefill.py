"""Prefill cost of LLaVA-NeXT-7B shapes, compressed vs not, on one device (random weights).

CLIP ViT-L/14-336 (full 24 layers) on the anyres views of a 672x672 image (5 views, 2880 visual
tokens), a Vicuna-7B-sized decoder truncated to ``--layers`` layers. Prints, per method and ratio:
decoder prefill time ratio next to the analytic decoder FLOPs ratio, and the compressor's time as
a share of the vision tower's. Usage: python evals/gpu_prefill.py [--device cuda] [--layers 4]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch


def build(device: str, dtype: torch.dtype, layers: int):
    # The same shapes as the cost benchmark (evals/bench/models.py), next to this script.
    from bench.models import CLIP_L_336, DECODERS, LLAVA_V16_PINPOINTS
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration

    vision = CLIPVisionConfig(**CLIP_L_336)
    text = LlamaConfig(
        **{**DECODERS["vicuna-7b"], "num_hidden_layers": layers},
        vocab_size=32064,
        max_position_embeddings=8192,
    )
    cfg = LlavaNextConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=32000,
        image_grid_pinpoints=LLAVA_V16_PINPOINTS,
    )
    cfg._attn_implementation = "sdpa"
    with torch.device(device):
        model = LlavaNextForConditionalGeneration(cfg)
    return model.to(dtype).eval(), text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--methods", default="globalcom2,fastervlm,tokencorr,uniform,pitome,tome")
    p.add_argument("--ratios", default="0.5,0.25,0.1")
    args = p.parse_args()
    import vtcompress
    from vtcompress.flops import decoder_prefill_flops
    from vtcompress.integrations.llava_next.layout import AnyResLayout

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    torch.manual_seed(0)
    model, text_cfg = build(args.device, dtype, args.layers)
    layout = AnyResLayout.for_image((672, 672), model.config.image_grid_pinpoints)
    n_img = layout.num_tokens() + layout.num_newlines()
    prompt = 40
    ids = torch.randint(0, 32000, (1, prompt + n_img), device=args.device)
    ids[0, 5 : 5 + n_img] = 32000
    inputs = dict(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        pixel_values=torch.randn(1, 5, 3, 336, 336, device=args.device, dtype=dtype),
        image_sizes=torch.tensor([[672, 672]], device=args.device),
    )
    lm = model.model.language_model
    stamps: dict[str, float] = {}

    def sync():
        if args.device == "cuda":
            torch.cuda.synchronize()

    def stamp(key: str):
        def hook(*_):  # must return None: a pre-hook's return value would replace the inputs
            sync()
            stamps[key] = time.perf_counter()

        return hook

    lm.register_forward_pre_hook(stamp("lm0"))
    lm.register_forward_hook(stamp("lm1"))

    def measure(n=args.repeats):
        out = []
        with torch.inference_mode():
            model(**inputs)  # warm-up
            for _ in range(n):
                sync()
                t0 = time.perf_counter()
                model(**inputs)
                sync()
                out.append((time.perf_counter() - t0, stamps["lm1"] - stamps["lm0"]))
        return statistics.median(o[0] for o in out), statistics.median(o[1] for o in out)

    name = (
        torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    )
    print(
        f"device: {name}; torch {torch.__version__}; dtype {dtype}; decoder 4096x{args.layers} layers "
        f"(FLOPs counted for these layers); CLIP-L/14-336 24 layers; image 672x672 = {layout.num_tokens()} visual tokens"
    )
    base_total, base_lm = measure()
    base_len = ids.shape[1]
    print(
        f"uncompressed: prefill total {base_total * 1e3:.1f} ms, decoder {base_lm * 1e3:.1f} ms, {base_len} tokens"
    )
    print(
        "| method | ratio | tokens | decoder time ratio | analytic FLOPs ratio | diff | compressor / vision tower |"
    )
    print("|---|---|---|---|---|---|---|")
    for method in args.methods.split(","):
        for r in (float(x) for x in args.ratios.split(",")):
            handle = vtcompress.compress(model, method, ratio=r)
            total, lm_time = measure()
            with torch.inference_mode():
                model(**inputs)
            st = handle.last_stats
            n_after = st.samples[0].length_after
            fr = decoder_prefill_flops(text_cfg, n_after) / decoder_prefill_flops(text_cfg, base_len)
            tr = lm_time / base_lm
            share = st.compress_seconds / st.vision_seconds if st.vision_seconds else float("nan")
            print(
                f"| {method} | {r} | {st.tokens_after} | {tr:.3f} | {fr:.3f} | {abs(tr - fr) / fr:+.0%} | {share:.2%} |"
            )
            handle.remove()


if __name__ == "__main__":
    main()
