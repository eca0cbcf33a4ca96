"""Vision-tower time and FLOPs vs final ratio for in-tower PiToMe and ToMe merging.

A CLIP ViT-L/14-336 vision tower (hidden 1024, MLP 4096, 16 heads, 577 tokens a view; random
weights, fp32, SDPA) runs as LLaVA-NeXT runs it: all layers, merges after layers 0..F-1 with F
the feature layer (hidden state -2: F = depth - 1). Ratios are FINAL kept fractions per view
(``placement="tower"``, exact schedule); ``pitome-paper`` is the official constant per-layer ratio.

Also times one merge step (scoring + matching + merging) at 576 tokens against one encoder
layer: the per-layer overhead of deciding what to merge.

    python evals/bench_merge.py                 # full depth (24 layers), 1 view
    python evals/bench_merge.py --layers 8      # reduced depth, for a quick look

Everything printed is measured in this run; FLOPs are analytic (2 per multiply-add).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from vtcompress import PiToMeConfig, ToMeConfig
from vtcompress.integrations.clip_merge import TowerMerge
from vtcompress.merge import merge_tokens, pitome_plan, tome_plan
from vtcompress.methods.merging import TokenMergingConfig

HIDDEN, MLP, HEADS, IMAGE, PATCH = 1024, 4096, 16, 336, 14


def layer_flops(tokens: int, hidden: int = HIDDEN, mlp: int = MLP) -> float:
    """One CLIP encoder layer on ``tokens`` tokens: q/k/v/out projections, scores + weighted sum, MLP."""
    macs = 4 * tokens * hidden * hidden + 2 * tokens * tokens * hidden + 2 * tokens * hidden * mlp
    return 2.0 * macs


def merge_flops(tokens: int, r: int, pitome: bool, hidden: int = HIDDEN) -> float:
    """Deciding and doing one merge step on ``tokens`` patches.

    PiToMe: the T x T cosine graph for the energy plus r x r matching; ToMe: the (T/2) x (T/2)
    bipartite scores. Both: averaging T rows.
    """
    half = (tokens + 1) // 2
    decide = tokens * tokens * hidden + r * r * hidden if pitome else half * half * hidden
    return 2.0 * decide + 2.0 * tokens * hidden


def uses_pitome_step(config: TokenMergingConfig, layer: int) -> bool:
    return isinstance(config, PiToMeConfig) and layer > config.bipartite_until


def build_tower(layers: int) -> CLIPVisionModel:
    config = CLIPVisionConfig(
        hidden_size=HIDDEN,
        intermediate_size=MLP,
        num_hidden_layers=layers,
        num_attention_heads=HEADS,
        image_size=IMAGE,
        patch_size=PATCH,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    return CLIPVisionModel(config).eval()


def encoder_layers(model: CLIPVisionModel):
    return getattr(model, "vision_model", model).encoder.layers


@torch.no_grad()
def timed(model: CLIPVisionModel, pixels: torch.Tensor) -> tuple[float, float]:
    """(wall, process CPU) seconds of one forward. CPU time is steadier on a shared machine."""
    wall, cpu = time.perf_counter(), time.process_time()
    model(pixels)
    return time.perf_counter() - wall, time.process_time() - cpu


def run_config(model, pixels, config: TokenMergingConfig | None) -> tuple[tuple[float, float], list[int]]:
    """Timings of one tower forward and the patch-token count entering each layer."""
    layers = encoder_layers(model)
    depth, feature = len(layers), len(layers) - 1
    patches = (IMAGE // PATCH) ** 2
    if config is None:
        return timed(model, pixels), [patches] * depth
    tower = TowerMerge(
        layers,
        lambda m, r, layer: config.plan(m, r, layer, depth, class_token=True),
        lambda n: config.tower_schedule(n, feature),
        feature,
        mode=config.merge,
    )
    try:
        seconds = timed(model, pixels)
        counts = [patches, *tower.token_counts]
    finally:
        tower.remove()
    return seconds, counts + [counts[-1]] * (depth - len(counts))


@torch.no_grad()
def step_overhead(repeats: int) -> list[tuple[str, float, float]]:
    """CPU seconds of one merge step at 576 patches (r = 5%) vs one encoder layer on 577 tokens."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 577, HIDDEN, generator=gen)
    layer = encoder_layers(build_tower(1))[0]
    r = 28

    def bench(fn) -> float:
        fn()
        return statistics.median(_time(fn) for _ in range(repeats))

    rows = [("encoder layer (577 tokens)", bench(lambda: layer(x, None)), layer_flops(577))]
    rows.append(
        (
            "pitome step (energy + match + merge)",
            bench(lambda: merge_tokens(x, pitome_plan(x[:, 1:], r, 0.5), class_token=True)),
            merge_flops(576, r, pitome=True),
        )
    )
    rows.append(
        (
            "tome step (match + merge)",
            bench(lambda: merge_tokens(x, tome_plan(x, r, class_token=True), class_token=True)),
            merge_flops(576, r, pitome=False),
        )
    )
    return rows


def _time(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def llava_share(ratios: list[float], tower_flops_per_view: dict[str, float]) -> None:
    """Analytic prefill FLOPs of LLaVA-NeXT-7B on one 672x672 image (5 views, 2880 visual tokens,
    40 text tokens): both placements give the LLM the same tokens; the tower placement also
    shrinks the CLIP tower (its FLOPs per view as measured above)."""
    from transformers import LlamaConfig

    from vtcompress.budget import keep_count
    from vtcompress.flops import decoder_prefill_flops
    from vtcompress.integrations.llava_next.layout import AnyResLayout

    layout = AnyResLayout.from_grid(2, 2, 24, (672, 672))
    text = LlamaConfig(
        hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32
    )
    prompt, views, newlines = 40, layout.num_views, layout.num_newlines()

    def llm(visual: int) -> float:
        return decoder_prefill_flops(text, prompt + visual + newlines)

    llm0, tower0 = llm(layout.num_tokens()), views * tower_flops_per_view["none"]
    print("\n# LLaVA-NeXT-7B prefill, one 672x672 image (5 views), analytic TFLOPs (decoder + CLIP tower)")
    print(
        f"{'ratio':<8}{'projector placement':>21}{'tower placement':>17}{'tower / projector':>19}{'CLIP share (proj.)':>20}"
    )
    print(
        f"{1.0:<8}{(llm0 + tower0) / 1e12:>21.2f}{(llm0 + tower0) / 1e12:>17.2f}{1.0:>19.3f}{tower0 / (llm0 + tower0):>20.1%}"
    )
    for ratio in ratios:
        # The image has no letterbox: the tower placement keeps floor(576 r) tokens in every view.
        merged_tower = views * tower_flops_per_view[f"pitome r={ratio:g}"]
        projector = llm(keep_count(layout.num_tokens(), ratio)) + tower0
        tower = llm(views * keep_count(layout.view_tokens, ratio)) + merged_tower
        print(
            f"{ratio:<8g}{projector / 1e12:>21.2f}{tower / 1e12:>17.2f}{tower / projector:>19.3f}"
            f"{tower0 / projector:>20.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--layers", type=int, default=24, help="tower depth (24 = CLIP ViT-L/14-336)")
    parser.add_argument("--views", type=int, default=1, help="views (crops) per forward")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per setting (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.75, 0.5, 0.25, 0.1])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(
        f"# machine: {platform.machine()} {platform.processor() or ''} | {torch.get_num_threads()} torch "
        f"thread(s) | torch {torch.__version__} | no GPU used"
    )
    print(
        f"# CLIP ViT-L/14-336 dims, depth {args.layers} (merges after layers 0..{args.layers - 2}), "
        f"{args.views} view(s), fp32, SDPA, random weights; median of {args.repeats}"
    )
    model = build_tower(args.layers)
    pixels = torch.randn(args.views, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        model(pixels)  # warm-up

    settings: list[tuple[str, TokenMergingConfig | None]] = [("none", None)]
    for ratio in args.ratios:
        settings.append((f"pitome r={ratio:g}", PiToMeConfig(ratio=ratio, placement="tower")))
        settings.append((f"tome   r={ratio:g}", ToMeConfig(ratio=ratio, placement="tower")))
    settings.append(("pitome-paper rho=0.9", PiToMeConfig.paper(layer_ratio=0.9)))
    # Rounds over all settings, so that drift in the machine's load hits every setting alike.
    wall = {name: [] for name, _ in settings}
    cpu = {name: [] for name, _ in settings}
    counts = {}
    for _ in range(args.repeats):
        for name, config in settings:
            (w, c), counts[name] = run_config(model, pixels, config)
            wall[name].append(w)
            cpu[name].append(c)

    def flops_of(name: str, config: TokenMergingConfig | None) -> float:
        seq = counts[name]  # patch tokens entering each layer
        total = sum(layer_flops(n + 1) for n in seq)
        for layer, (a, b) in enumerate(zip(seq[:-1], seq[1:])):
            if a != b:
                total += merge_flops(a, a - b, uses_pitome_step(config, layer))
        return total * args.views

    base_wall, base_cpu = statistics.median(wall["none"]), statistics.median(cpu["none"])
    base_flops = flops_of("none", None)
    print(
        f"{'setting':<22}{'tokens/view':>12}{'wall s':>9}{'cpu s':>9}{'speedup':>9}{'GFLOPs':>9}{'FLOPs kept':>12}"
    )
    for name, config in settings:
        w, c, f = statistics.median(wall[name]), statistics.median(cpu[name]), flops_of(name, config)
        print(
            f"{name:<22}{counts[name][-1]:>12}{w:>9.2f}{c:>9.2f}{base_cpu / c:>9.2f}"
            f"{f / 1e9:>9.1f}{f / base_flops:>12.3f}"
        )
    print(
        f"# speedup = CPU-time ratio to 'none'; wall-clock ratio of the same runs: 'none' {base_wall:.2f} s"
    )

    llava_share(args.ratios, {name: flops_of(name, config) / args.views for name, config in settings})

    print("\n# one merge step at 576 patches, r = 28 (5%), vs one encoder layer")
    print(f"{'operation':<40}{'cpu ms':>9}{'GFLOPs':>9}")
    for name, seconds, flops in step_overhead(max(args.repeats, 5)):
        print(f"{name:<40}{seconds * 1e3:>9.2f}{flops / 1e9:>9.2f}")


if __name__ == "__main__":
    main()
