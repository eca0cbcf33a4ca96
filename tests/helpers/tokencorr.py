"""Shared builders for the tokencorr tests: random captured q/k, images, a tiny random CLIP."""

from __future__ import annotations

import random

import torch
from PIL import Image, ImageDraw, ImageFont

from vtcompress.integrations.llava_next.layout import AnyResLayout
from vtcompress.tokens import ImageTokens, LayerQK

CLIP_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073])
CLIP_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711])


def random_qk(views: int, n: int, heads: int = 2, dh: int = 8, gen: torch.Generator | None = None) -> LayerQK:
    q = torch.randn(views, heads, dh, generator=gen)
    k = torch.randn(views, 1 + n, heads, dh, generator=gen)
    return LayerQK(q_cls=q, keys=k, scale=dh**-0.5)


def clustered_qk(
    views: int, n: int, clusters: list[int], gen: torch.Generator, heads: int = 2, dh: int = 8
) -> LayerQK:
    """Keys of view v drawn around ``clusters[v]`` centres (few centres: a redundant view)."""
    qk = random_qk(views, n, heads, dh, gen)
    for v, c in enumerate(clusters):
        centres = torch.randn(c, heads, dh, generator=gen)
        pick = torch.randint(0, c, (n,), generator=gen)
        qk.keys[v, 1:] = centres[pick] + 0.05 * torch.randn(n, heads, dh, generator=gen)
    return qk


def synthetic_tokens(
    rows: int = 1,
    cols: int = 2,
    side: int = 6,
    image_size: tuple[int, int] | None = None,
    num_layers: int = 4,
    layers: tuple[int, ...] = (2,),
    dim: int = 5,
    seed: int = 0,
    clusters: list[int] | None = None,
) -> ImageTokens:
    """An anyres image with random features and random (or clustered) q/k for ``layers``."""
    gen = torch.Generator().manual_seed(seed)
    layout = (
        AnyResLayout.from_grid(rows, cols, side, image_size or (rows * side, cols * side))
        if rows * cols
        else AnyResLayout.single_view(side)
    )
    v, n = layout.num_views, side * side
    qk = {}
    for layer in layers:
        qk[layer] = clustered_qk(v, n, clusters, gen) if clusters else random_qk(v, n, gen=gen)
    return ImageTokens(
        features=torch.randn(v, n, dim, generator=gen),
        layout=layout,
        qk=qk,
        score_layer=num_layers - 1,
        num_layers=num_layers,
    )


def blank_page(px: int) -> Image.Image:
    return Image.new("RGB", (px, px), "white")


def text_page(px: int, seed: int = 0, font_size: int = 11) -> Image.Image:
    """A page crop filled with lines of small black text."""
    rng = random.Random(seed)
    img = Image.new("RGB", (px, px), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=font_size)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789  "
    for y in range(2, px - font_size, font_size + 2):
        line = "".join(rng.choice(letters) for _ in range(px // 5))
        draw.text((2, y), line, fill="black", font=font)
    return img


def half_text_page(px: int) -> Image.Image:
    """A page crop whose top half carries text, the bottom half blank."""
    img = blank_page(px)
    img.paste(text_page(px, seed=1).crop((0, 0, px, px // 2)), (0, 0))
    return img


def rendered_page_tokens(px: int = 224, patch: int = 14, layers: int = 4) -> ImageTokens:
    """A 1x3 anyres page through a tiny random CLIP: a blank, a half-written and a dense crop.

    q/k are captured for every layer; features are the last hidden state's patch tokens.
    """
    crops = [blank_page(px), half_text_page(px), text_page(px)]
    page = Image.new("RGB", (3 * px, px), "white")
    for i, crop in enumerate(crops):
        page.paste(crop, (i * px, 0))
    views = [page.resize((px, px), Image.BICUBIC), *crops]
    model = tiny_clip(px, patch, layers=layers)
    qk, hidden = clip_qk(model, pixels(views), set(range(layers)))
    return ImageTokens(
        features=hidden[:, 1:],
        layout=AnyResLayout.from_grid(1, 3, px // patch, (px, 3 * px)),
        qk=qk,
        score_layer=layers - 1,
        num_layers=layers,
    )


def pixels(images: list[Image.Image]) -> torch.Tensor:
    """[B, 3, H, W] CLIP-normalised pixels."""
    x = torch.stack(
        [torch.tensor(list(im.getdata()), dtype=torch.float32).view(im.height, im.width, 3) for im in images]
    )
    x = x.permute(0, 3, 1, 2) / 255.0
    return (x - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]


def tiny_clip(image_px: int = 224, patch: int = 14, layers: int = 4, seed: int = 0):
    from transformers import CLIPVisionConfig, CLIPVisionModel

    torch.manual_seed(seed)
    cfg = CLIPVisionConfig(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=layers,
        num_attention_heads=4,
        image_size=image_px,
        patch_size=patch,
    )
    return CLIPVisionModel(cfg).eval()


@torch.no_grad()
def clip_qk(model, pix: torch.Tensor, layers: set[int]) -> tuple[dict[int, LayerQK], torch.Tensor]:
    """Run the tower once; return each asked layer's [CLS] query and keys, and the last hidden state."""
    cfg = model.config
    heads, dh = cfg.num_attention_heads, cfg.hidden_size // cfg.num_attention_heads
    got: dict[tuple[int, str], torch.Tensor] = {}
    handles = []
    for layer in layers:
        attn = getattr(model, "vision_model", model).encoder.layers[layer].self_attn
        for name in ("q_proj", "k_proj"):

            def hook(_m, _i, out, key=(layer, name)):
                got[key] = out

            handles.append(getattr(attn, name).register_forward_hook(hook))
    try:
        out = model(pixel_values=pix)
    finally:
        for h in handles:
            h.remove()
    qk = {}
    for layer in layers:
        q = got[(layer, "q_proj")]
        b, t, _ = q.shape
        qk[layer] = LayerQK(
            q_cls=q[:, 0].reshape(b, heads, dh),
            keys=got[(layer, "k_proj")].reshape(b, t, heads, dh),
            scale=dh**-0.5,
        )
    return qk, out.last_hidden_state


# Crafted score maps: 1-head LayerQKs whose [CLS] attention and key similarity are set by hand.
SPIKES = {3: 20.0, 17: 30.0, 30: 40.0}  # deep-layer weights of the three IQR outliers (others 1)
SAME_KEYS = {"blank": 36, "half": 18, "dense": 0}  # patches sharing one key: density 0, 1/2, 1


def crafted_low(kinds: list[str], n: int = 36, local_hot: tuple[int, ...] = ()) -> LayerQK:
    """Low layer of views of the given kinds ("blank", "half", "dense"), ``n`` patches each.

    The first ``SAME_KEYS[kind] * n / 36`` patches share one key (all redundant), the others get
    orthogonal keys (never alike): density 0, 1/2 or 1. [CLS] logits:
    the shared key 0.6, distinct patch i ``1 - i / n`` (lower positions more attended), patches in
    ``local_hot`` 3.0 (the most attended of all; a shared-key one gets 0.6 + 0.9).
    """
    dim = n + 2  # shared key, one axis per patch, [CLS]
    keys = torch.zeros(len(kinds), 1 + n, 1, dim)
    q = torch.zeros(len(kinds), 1, dim)
    for v, kind in enumerate(kinds):
        same = SAME_KEYS[kind] * n // 36
        keys[v, 0, 0, dim - 1] = 1.0
        for i in range(n):
            keys[v, 1 + i, 0, 0 if i < same else i + 1] = 1.0
            if i < same and i in local_hot:  # still alike to the shared key (cos 0.96), more attended
                keys[v, 1 + i, 0, i + 1] = 0.3
        q[v, 0, 0] = 0.6
        q[v, 0, 1 : n + 1] = 1.0 - torch.arange(n) / n
        for i in local_hot:
            q[v, 0, i + 1] = 3.0
        q[v, 0, dim - 1] = -30.0  # [CLS] attends to itself almost not at all
    return LayerQK(q_cls=q, keys=keys, scale=1.0)


def weights_qk(weights: torch.Tensor) -> LayerQK:
    """A layer whose head-mean [CLS] attention over the patches is proportional to ``weights`` [V, N]."""
    v, n = weights.shape
    keys = torch.full((v, 1 + n, 1, 1), -30.0)
    keys[:, 1:, 0, 0] = weights.log()
    return LayerQK(q_cls=torch.ones(v, 1, 1), keys=keys, scale=1.0)


def crafted_deep(views: int, n: int = 36, spikes: dict[int, float] = SPIKES) -> LayerQK:
    """Deep layer whose only IQR outliers are the ``spikes`` positions (weight 1 elsewhere)."""
    w = torch.ones(views, n)
    for i, s in spikes.items():
        w[:, i] = s
    return weights_qk(w)
