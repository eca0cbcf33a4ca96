"""The compression pipeline every host shares: check a method against a host, compress a batch
of images, describe what happened (stats, FLOPs), and give ``generate`` its caller's prompt back.

Hosts (``vtcompress.integrations.*``) only capture what a method needs, build
:class:`~vtcompress.tokens.ImageTokens`, and splice the kept tokens back into their model.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vtcompress.batch import CompressedImage
from vtcompress.config import CAPABILITIES, TOWER_MERGE, CompressionConfig
from vtcompress.flops import decoder_prefill_flops
from vtcompress.layout import Layout
from vtcompress.merge import tower_merging
from vtcompress.registry import MethodSpec
from vtcompress.stats import ImageStats, SampleStats, ViewStats
from vtcompress.tokens import ImageTokens, ViewOutput, keep_all


def check_applicable(
    config: CompressionConfig,
    host: str,
    provides: frozenset[str] | set[str],
    score_layer: int,
    num_layers: int,
) -> None:
    """Raise ValueError when ``host`` lacks something the configured method needs.

    The message names the method, the host, what is missing and, where the method has one,
    the option that does without it.
    """
    needs = config.requirements(score_layer, num_layers)
    for need, fix in needs.items():
        if need not in provides:
            what = CAPABILITIES.get(need, need)
            hint = f"; {fix}" if fix else ""
            raise ValueError(f"method {config.method!r} needs {what}, which {host} does not provide{hint}")
    if TOWER_MERGE in needs:
        tower_merging(config)  # the protocol the host calls


def compress_image(method: MethodSpec, config: CompressionConfig, tokens: ImageTokens) -> list[ViewOutput]:
    """One image's kept (or merged) tokens per view; every token when the config is off."""
    if config.is_off:
        return keep_all(tokens)
    outs = method.compress(tokens, config)
    if len(outs) != tokens.num_views:
        raise RuntimeError(
            f"method {config.method!r} returned {len(outs)} views for an image of {tokens.num_views}"
        )
    return outs


def compress_images(
    method: MethodSpec, config: CompressionConfig, tokens: list[ImageTokens]
) -> list[CompressedImage]:
    """Every image of a batch, compressed; one result per image, in order.

    Images that share a layout go through the method's batched path at once where it has one
    (``register_batch``) and it takes the config; every other image goes through
    :func:`compress_image`. Both give the same tokens.
    """
    out: list[CompressedImage | None] = [None] * len(tokens)
    if method.compress_batch is not None and not config.is_off:
        groups: dict[Layout, list[int]] = {}
        for i, t in enumerate(tokens):
            try:
                groups.setdefault(t.layout, []).append(i)
            except TypeError:  # an unhashable third-party layout: that image goes alone
                continue
        for members in groups.values():
            batch = method.compress_batch([tokens[i] for i in members], config)
            if batch is not None:
                for row, i in enumerate(members):
                    out[i] = CompressedImage(tokens[i], batch=batch, row=row)
    return [
        r if r is not None else CompressedImage(t, compress_image(method, config, t))
        for r, t in zip(out, tokens)
    ]


def image_stats(
    layout: Layout,
    outs: list[ViewOutput] | CompressedImage,
    config: CompressionConfig,
    *,
    index: int,
    image_size: tuple[int, int],
    seconds: float,
    newlines_before: int,
    newlines_after: int,
    note: str = "",
    passthrough: bool = False,
) -> ImageStats:
    """What compression did to one image (positions as (row, col) of each view's token grid).

    Given a :class:`CompressedImage`, the per-view part is built when first read (a batched
    result reads nothing back from the device until then).
    """
    width = layout.view_grid[1]

    def cells(positions: Tensor) -> list[tuple[int, int]]:
        return [divmod(int(p), width) for p in positions.tolist()]

    def views() -> list[ViewStats]:
        return [
            ViewStats(
                name,
                original,
                out.num_kept,
                cells(out.positions),
                out.sizes.tolist() if out.sizes is not None else None,
                dict(out.info) if out.info else {},
                sources=[cells(src) for src in out.sources] if out.sources is not None else None,
            )
            for name, original, out in zip(layout.view_names(), layout.view_counts(), per_view())
        ]

    if isinstance(outs, CompressedImage):
        image, per_view, kept = outs, (lambda: image.views), outs.num_kept
    else:
        per_view, kept = (lambda: outs), sum(o.num_kept for o in outs)
    return ImageStats(
        index=index,
        image_size=tuple(int(x) for x in image_size),
        grid=(layout.rows, layout.cols),
        method=config.method,
        ratio=config.ratio,
        tokens_before=layout.num_tokens(),
        tokens_after=kept,
        newlines_before=newlines_before,
        newlines_after=newlines_after,
        seconds=seconds,
        views=views if isinstance(outs, CompressedImage) else views(),
        passthrough=passthrough,
        note=note,
    )


def sample_stats(text_config: Any, before: list[int], after: list[int]) -> list[SampleStats]:
    """Per sequence: real prompt tokens before/after compression and the decoder's prefill FLOPs."""
    return [
        SampleStats(
            b,
            int(n0),
            int(n1),
            decoder_prefill_flops(text_config, int(n0)),
            decoder_prefill_flops(text_config, int(n1)),
        )
        for b, (n0, n1) in enumerate(zip(before, after))
    ]


def restore_prompt(out: Any, prompt_ids: Tensor, short_len: int) -> Any:
    """Put the caller's own prompt ids ([B, L]) back in front of what ``generate`` returned.

    ``generate`` ran on prompts shortened to ``short_len`` tokens; its sequences are
    [B * n, short_len + new] when it returns ``n`` sequences per prompt (``num_return_sequences``,
    beams), each prompt's returns next to each other, as transformers orders them.
    """
    sequences = out if isinstance(out, Tensor) else getattr(out, "sequences", None)
    if sequences is None:
        return out
    repeats, rest = divmod(sequences.shape[0], prompt_ids.shape[0])
    if rest:
        raise RuntimeError(
            f"generate returned {sequences.shape[0]} sequences for {prompt_ids.shape[0]} prompts"
        )
    prompt = prompt_ids.repeat_interleave(repeats, dim=0).to(sequences.device)
    full = torch.cat([prompt, sequences[:, short_len:]], dim=1)
    if isinstance(out, Tensor):
        return full
    out.sequences = full
    return out
