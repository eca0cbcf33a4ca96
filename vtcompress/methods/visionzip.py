"""VisionZip: dominant tokens by [CLS] attention plus contextual tokens merged from the rest.

Paper: "VisionZip: Longer is Better but Not Necessary in Vision Language Models" (CVPR 2025).
Written from the paper and the facts of its official code (Apache-2.0); no code copied.

Steps for one view (the official code runs them on every view alike: LLaVA-1.5's one image,
LLaVA-NeXT's base image and each crop), on the tower's penultimate layer (``layer=-2``):

1. Dominant: the [CLS] query's attention over all keys (softmax), summed over heads, the [CLS]
   column dropped; the view's top ``p`` tokens by it.
2. Contextual: the ``M`` other tokens, in raster order, compared by the layer's keys averaged
   over heads and L2-normalised. ``c`` targets are taken at a uniform stride
   (``step = max(1, M // c)``, the first ``c`` of ``0, step, 2 step, ...``); every other token
   goes to its most similar target (cosine, ties: the first target); a contextual token is
   ``target + mean(assigned tokens)`` (just the target when nothing is assigned).
3. Kept: the dominant tokens and the contextual tokens.

Budgets (the official code has a fixed count per view, ``dominant`` counting the [CLS] token):

* default, exact budget: an image keeps ``floor(r N)`` tokens, split across views in
  proportion to their sizes (as every baseline); a view's ``k`` is split into
  ``c = floor(5 k / 32 + 1/2)`` contextual and ``k - c`` dominant tokens: the published
  proportion (54+10 = 64 in the README; 162+30 = 192 and 108+20 = 128 in the paper all have
  ``c / k = 10/64``);
* ``dominant`` and ``contextual`` set: every view keeps that many (capped at its tokens), as
  the official ``visionzip(model, dominant, contextual)`` does; the ratio is then unused, and
  the method compresses even at ratio 1.0;
* ``cls_slot``: the official dominant set is ``topk(dominant - 1)`` patch tokens plus the
  [CLS] token. The features a host hands over have no [CLS] token (transformers' LLaVA-NeXT
  drops it before the projector), so ``"patch"`` (default) gives its slot to one more patch
  token (the official token count), and ``"drop"`` keeps the official patch selection and
  leaves the slot empty (one token fewer per view). ``VisionZipConfig.paper()`` is
  ``dominant=54, contextual=10, cls_slot="drop"``: the official selection on the same tensors.

Deliberate deviations from the official code:

* the [CLS] token itself is not kept (see ``cls_slot``): the hosts' projected features have none;
* contextual tokens are merged after the projector (target + mean of the projected tokens),
  not before it: a method never runs the model's projector. The two agree for a linear
  projector; LLaVA's MLP projector is not linear;
* kept tokens are packed in raster order, a contextual token at its target's position (the
  official code puts the contextual tokens after the dominant ones, and on LLaVA-NeXT all
  [CLS] and contextual tokens of the crops after the crops' grid);
* scores and similarities are float32 and contextual sums float64 (the official code uses the
  model's dtype, so near-ties may rank differently); equal scores keep the lower position
  (``torch.topk`` leaves it open);
* on LLaVA-NeXT, tokens that unpadding removes are never candidates (the official code selects
  among a crop's 576 tokens, padding included, and does not unpad);
* on grouped layouts (DocOwl's 1x4 H-Reducer groups) a token's key is its group's mean key and its
  attention the softmax over group logits (``vtcompress.scores``);
* a zero key counts as orthogonal to every target (the official division would give NaN).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from vtcompress.batch import Plan, Plans, SelectedBatch, stacked
from vtcompress.config import CLS_ATTENTION, CompressionConfig, check_choice
from vtcompress.layout import Layout, view_positions
from vtcompress.methods.baselines import uniform_view_budgets
from vtcompress.registry import register_batch, register_method
from vtcompress.scores import cls_logits, group_keys
from vtcompress.tokens import ImageTokens, ViewOutput

PUBLISHED = (54, 10)  # README: dominant (incl. [CLS]) + contextual = 64 tokens per view


def contextual_share(k: int) -> int:
    """Contextual tokens of a view that keeps ``k``: the published 10 of 64, rounded half up."""
    return (5 * k + 16) // 32


@dataclass
class VisionZipConfig(CompressionConfig):
    """VisionZip options (see the module docstring). Default: exact budget, published proportion."""

    dominant: int | None = None  # per view, official meaning: counts the [CLS] slot
    contextual: int | None = None
    cls_slot: str = "patch"  # "patch" (one more patch token) | "drop" (official selection, slot empty)
    layer: int = -2  # vision layer of the [CLS] attention and keys; -2: the penultimate (official)

    def validate(self) -> None:
        check_choice("cls_slot", self.cls_slot, ("patch", "drop"))
        if (self.dominant is None) != (self.contextual is None):
            raise ValueError("set both dominant and contextual (e.g. 54 and 10), or neither to use the ratio")
        for name in ("dominant", "contextual"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
        if self.dominant is not None and self.dominant + self.contextual < 1:
            raise ValueError("dominant + contextual must keep at least one token per view")
        if self.cls_slot == "drop" and self.dominant == 0:
            raise ValueError("cls_slot='drop' counts the [CLS] slot in dominant: use dominant >= 1")

    @classmethod
    def paper(
        cls, dominant: int = PUBLISHED[0], contextual: int = PUBLISHED[1], **overrides
    ) -> VisionZipConfig:
        """The official selection: ``dominant - 1`` patch tokens (+ the absent [CLS]) and ``contextual``."""
        return cls(dominant=dominant, contextual=contextual, **{"cls_slot": "drop", **overrides})

    @property
    def is_off(self) -> bool:
        return self.ratio >= 1.0 and self.dominant is None

    def kept_count(self, layout: Layout) -> int | None:
        """Per view, dominant plus contextual tokens (:func:`view_splits`): ``floor(r N)`` by default,
        the explicit split's count when ``dominant`` and ``contextual`` are set."""
        return layout.num_tokens() if self.is_off else sum(d + c for d, c in view_splits(layout, self))

    def vision_layer(self, num_layers: int) -> int:
        if not -num_layers <= self.layer < num_layers:
            raise ValueError(f"layer {self.layer} is outside the vision tower's {num_layers} layers")
        return self.layer % num_layers

    def capture_layers(self, score_layer: int, num_layers: int) -> tuple[set[int], set[int]]:
        return {self.vision_layer(num_layers)}, set()

    def requirements(self, score_layer: int, num_layers: int) -> dict[str, str]:
        return {CLS_ATTENTION: "use divprune or downsample, which need no [CLS] token"}


def view_splits(layout: Layout, config: VisionZipConfig) -> list[tuple[int, int]]:
    """Per view, (dominant patch tokens, contextual tokens): a function of layout and config."""
    counts = layout.view_counts()
    if config.dominant is None:
        budgets = uniform_view_budgets(ImageTokens(torch.zeros(0), layout), config.ratio)
        slots = [(k - contextual_share(k), contextual_share(k)) for k in budgets]
    else:
        slots = [(config.dominant, config.contextual)] * len(counts)
    splits = []
    for n, (d, c) in zip(counts, slots):
        patches = min(max(d - (config.cls_slot == "drop"), 0), n)
        splits.append((patches, min(c, n - patches)))
    return splits


def attention_and_keys(tokens: ImageTokens, layer: int) -> tuple[Tensor, Tensor]:
    """[V, N] head-summed [CLS] attention (softmax over every key) and [V, N, dh] head-mean keys."""
    attention = cls_logits(tokens, layer).softmax(dim=-1)[:, :, 1:].sum(dim=1)
    keys = tokens.qk[layer].keys
    group = tuple(tokens.layout.patch_group)
    if group != (1, 1):
        h, w = tokens.layout.view_grid
        keys = group_keys(keys, (h * group[0], w * group[1]), group)
    return attention, keys[:, 1:].float().mean(dim=2)


@functools.lru_cache(maxsize=1024)
@torch.inference_mode(False)  # cached tensors must stay usable outside inference mode
def strided_targets(m: int, c: int) -> tuple[Tensor, Tensor]:
    """Of ``m`` tokens, the ``c`` targets (``step = max(1, m // c)``, the first c of 0, step, ...)
    and the others, as CPU long indices (a function of m and c: no device work)."""
    step = max(1, m // c)
    targets = list(range(0, m, step))[:c]
    chosen = set(targets)
    return torch.tensor(targets, dtype=torch.long), torch.tensor(
        [i for i in range(m) if i not in chosen], dtype=torch.long
    )


def zip_view(
    x: Tensor, attention: Tensor, keys: Tensor, patches: int, contextual: int
) -> tuple[Tensor, Tensor, Tensor]:
    """VisionZip on one view of B images (steps 1-3 of the module docstring).

    Args:
        x: [B, n, D] features of the view's valid tokens; attention: [B, n]; keys: [B, n, dh].
    Returns:
        kept indices into ``n`` (long [B, k], ascending), their features [B, k, D] (contextual
        ones merged, in ``x``'s dtype) and sizes (long [B, k]: 1 + tokens merged into each).
    """
    b, n, _ = x.shape
    dev = x.device
    order = attention.float().argsort(dim=1, descending=True, stable=True)
    dominant = order[:, :patches]
    if contextual == 0:
        index = dominant.sort(dim=1).values
        return index, x.gather(1, index[..., None].expand(-1, -1, x.shape[-1])), torch.ones_like(index)
    rest = order[:, patches:].sort(dim=1).values  # [B, M] the others in raster order
    m = n - patches
    slots, other_slots = (t.to(dev) for t in strided_targets(m, contextual))
    targets, others = rest[:, slots], rest[:, other_slots]  # [B, c], [B, M - c]
    unit = keys.float()
    unit = unit / unit.norm(dim=-1, keepdim=True).clamp_min(1e-30)
    t_unit = unit.gather(1, targets[..., None].expand(-1, -1, unit.shape[-1]))
    o_unit = unit.gather(1, others[..., None].expand(-1, -1, unit.shape[-1]))
    assign = torch.bmm(o_unit, t_unit.transpose(1, 2)).argmax(dim=2)  # [B, M - c]
    # Sums in float64 by scatter (not a one-hot matmul, whose float32 rounding depends on the batch
    # size): an image gets the same contextual tokens alone or in a batch.
    d = x.shape[-1]
    counts = torch.zeros(b, contextual, dtype=torch.long, device=dev).scatter_add_(
        1, assign, torch.ones_like(assign)
    )
    x64 = x.double()
    merged = torch.zeros(b, contextual, d, dtype=torch.float64, device=dev).scatter_add_(
        1, assign[..., None].expand(-1, -1, d), x64.gather(1, others[..., None].expand(-1, -1, d))
    )
    context = x64.gather(1, targets[..., None].expand(-1, -1, d)) + merged / counts.clamp_min(1)[..., None]
    index = torch.cat([dominant, targets], dim=1)
    feats = torch.cat(
        [x.gather(1, dominant[..., None].expand(-1, -1, x.shape[-1])), context.to(x.dtype)], dim=1
    )
    sizes = torch.cat([torch.ones_like(dominant), 1 + counts], dim=1)
    index, perm = index.sort(dim=1)
    feats = feats.gather(1, perm[..., None].expand_as(feats))
    return index, feats, sizes.gather(1, perm)


def _plan(layout: Layout, config: VisionZipConfig) -> Plan:
    splits = view_splits(layout, config)
    return Plan(splits=splits, total=sum(p + c for p, c in splits))


_plans = Plans(_plan)


def _zip_views(
    tokens: ImageTokens, config: VisionZipConfig, images: int
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Per view: kept grid positions [B, k], features [B, k, D] and sizes [B, k] of ``images`` images
    (``tokens`` holds their B*V views, image-major)."""
    layout = tokens.layout
    layer = config.vision_layer(tokens.num_layers)
    attention, keys = attention_and_keys(tokens, layer)
    v = layout.num_views
    feats = tokens.features.view(images, v, *tokens.features.shape[1:])
    attention, keys = attention.view(images, v, -1), keys.view(images, v, *keys.shape[1:])
    out = []
    splits = _plans(layout, config)["splits"]
    for view, (pos, (patches, contextual)) in enumerate(zip(view_positions(layout), splits)):
        on = pos.to(feats.device)
        index, kept, sizes = zip_view(
            feats[:, view, on], attention[:, view, on], keys[:, view, on], patches, contextual
        )
        out.append((on[index], kept, sizes))
    return out


@register_method(
    "visionzip", VisionZipConfig, "dominant [CLS]-attention tokens + merged contextual tokens (VisionZip)"
)
def visionzip(tokens: ImageTokens, config: VisionZipConfig) -> list[ViewOutput]:
    """One image; one ViewOutput per view (kept tokens in raster order, contextual ones merged)."""
    return [
        ViewOutput(positions=pos[0].cpu(), features=feats[0], sizes=sizes[0].cpu())
        for pos, feats, sizes in _zip_views(tokens, config, 1)
    ]


@register_batch("visionzip")
def visionzip_batch(tokens: list[ImageTokens], config: VisionZipConfig) -> SelectedBatch:
    """:func:`visionzip` for images of one layout: each view's steps run once for every image.

    Kept tokens are written at their positions into a [B, V, N, D] buffer with a keep mask, so
    they pack like selected tokens; every image keeps the plan's total.
    """
    layout, b = tokens[0].layout, len(tokens)
    batch = stacked(tokens)
    v, n, d = tokens[0].features.shape
    buffer = batch.features.new_zeros(b, v, n, d)
    keep = torch.zeros(b, v, n, dtype=torch.bool, device=buffer.device)
    views = _zip_views(batch, config, b)
    rows = torch.arange(b, device=buffer.device)[:, None]
    for view, (pos, kept, _) in enumerate(views):
        buffer[rows, view, pos] = kept
        keep[rows, view, pos] = True

    def build_views(row: int) -> list[ViewOutput]:
        return [ViewOutput(pos[row].cpu(), kept[row], sizes[row].cpu()) for pos, kept, sizes in views]

    return SelectedBatch(layout, buffer, keep, _plans(layout, config)["total"], build_views=build_views)
