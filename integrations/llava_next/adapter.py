"""LLaVA-NeXT (transformers 5.x) adapter: removable hooks around the stock model.

What it installs (all instance attributes or hook handles, all undone by ``remove()``):
* forward hooks on ``q_proj`` / ``k_proj`` of the vision layers a method scores with, and
  pre-hooks for hidden states it asks for (never ``output_attentions``: SDPA stays on);
* ``pack_image_features`` on the inner ``LlavaNextModel``: the point where per-view projected
  features exist; it calls the method and packs kept tokens (newlines per the method's policy);
* the method's ``tower_patch``, if it has one (in-tower merging): hooks that change the token
  count inside the vision tower and report, per view, which token holds each original patch
  (``ImageTokens.sources``); the method then places merged tokens in the grid;
* ``get_image_features`` (signature kept, generate() selects arguments by it): turns capture on
  and returns features already computed for the same pixels in this call;
* ``forward`` and ``generate`` of the outer model: encode + compress first, then shorten each
  sample's placeholder run in ``input_ids`` (and mask, labels, position ids), re-pad, and run the
  stock code. ``generate`` returns the ORIGINAL prompt ids followed by the new tokens, so
  ``out[:, inputs.input_ids.shape[1]:]`` still slices off the prompt. ``forward`` returns logits
  over the shortened sequence (``handle.last_stats.samples`` has both lengths).
"""

from __future__ import annotations

import functools
import inspect
import time
from typing import Any

import torch
from torch import Tensor, nn

from vtcompress.api import CompressionHandle, register_adapter
from vtcompress.config import CompressionConfig
from vtcompress.flops import decoder_prefill_flops
from vtcompress.layout import AnyResLayout, pack_views
from vtcompress.registry import get_method
from vtcompress.sequence import shorten_placeholder_runs
from vtcompress.stats import CompressionStats, ImageStats, SampleStats, ViewStats
from vtcompress.tokens import ImageTokens, LayerQK, ViewOutput, keep_all


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _inner_model(model: nn.Module) -> nn.Module:
    return model.model if type(model).__name__ == "LlavaNextForConditionalGeneration" else model


@register_adapter
class LlavaNextAdapter:
    model_names = "LlavaNextForConditionalGeneration, LlavaNextModel"

    @staticmethod
    def supports(model: nn.Module) -> bool:
        return type(model).__name__ in ("LlavaNextForConditionalGeneration", "LlavaNextModel")

    def __init__(self, model: nn.Module, config: CompressionConfig, handle: CompressionHandle) -> None:
        self.model, self.config, self.handle = model, config, handle
        self.inner = _inner_model(model)
        self.method = get_method(config.method)
        mcfg = self.inner.config
        if not isinstance(mcfg.vision_feature_layer, int):
            raise ValueError("vtcompress supports LLaVA-NeXT checkpoints with one vision_feature_layer (int)")
        if mcfg.vision_feature_select_strategy != "default":
            raise ValueError("vtcompress supports vision_feature_select_strategy='default' (CLS dropped)")
        vision = self.inner.vision_tower
        # transformers >= 5.2x flattened CLIPVisionModel; older 5.x keep a .vision_model.
        self.layers = getattr(vision, "vision_model", vision).encoder.layers
        self.num_layers = len(self.layers)
        self.side = mcfg.vision_config.image_size // mcfg.vision_config.patch_size
        # hidden_states[i] is the input of layer i: the layer that consumes the features scores them.
        self.score_layer = min(mcfg.vision_feature_layer % (self.num_layers + 1), self.num_layers - 1)
        self.off = config.is_off
        self.qk_layers, self.hidden_layers = config.capture_layers(self.score_layer, self.num_layers)
        self.capturing = False
        self.captured_q: dict[int, Tensor] = {}
        self.captured_k: dict[int, Tensor] = {}
        self.captured_hidden: dict[int, Tensor] = {}
        self.pending: tuple[Tensor, Any] | None = None  # (pixel_values, image outputs) of this call
        self.prepared = False  # input_ids already shortened by our generate()
        self.stats: CompressionStats | None = None
        self.vision_start = 0.0
        self.hooks: list[Any] = []
        self.patched: list[tuple[nn.Module, str]] = []
        # In-tower methods: removable hooks with ``.owner`` (long [views, side*side]) after a run.
        self.tower = None
        if self.method.tower_patch is not None and not self.off:
            self.tower = self.method.tower_patch(
                self.layers, config, self.score_layer, self.num_layers, lambda: self.capturing
            )
        self._install(vision)

    # --- installation -------------------------------------------------------------------------
    def _patch(self, module: nn.Module, name: str, fn: Any) -> None:
        setattr(module, name, fn)
        self.patched.append((module, name))

    def _install(self, vision: nn.Module) -> None:
        for i in sorted(self.qk_layers):
            attn = self.layers[i].self_attn
            self.hooks.append(
                attn.q_proj.register_forward_hook(functools.partial(self._grab, self.captured_q, i, True))
            )
            self.hooks.append(
                attn.k_proj.register_forward_hook(functools.partial(self._grab, self.captured_k, i, False))
            )
        for i in sorted(self.hidden_layers):
            if i < self.num_layers:
                self.hooks.append(
                    self.layers[i].register_forward_pre_hook(
                        functools.partial(self._grab_input, i), with_kwargs=True
                    )
                )
            else:
                self.hooks.append(
                    self.layers[-1].register_forward_hook(functools.partial(self._grab_output, i))
                )
        self.hooks.append(vision.register_forward_pre_hook(self._vision_start))
        self.hooks.append(vision.register_forward_hook(self._vision_end))
        self._patch(self.inner, "pack_image_features", self._pack_image_features)
        self._patch(
            self.inner, "get_image_features", self._wrap_get_image_features(self.inner.get_image_features)
        )
        outer = self.model
        self._patch(outer, "forward", self._wrap_forward(outer.forward))
        if hasattr(outer, "generate"):
            self._patch(outer, "generate", self._wrap_generate(outer.generate))

    def remove(self) -> None:
        if self.tower is not None:
            self.tower.remove()
            self.tower = None
        for h in self.hooks:
            h.remove()
        for module, name in reversed(self.patched):
            if name in module.__dict__:
                delattr(module, name)
        self.hooks, self.patched = [], []

    # --- capture hooks ------------------------------------------------------------------------
    def _grab(
        self, store: dict[int, Tensor], layer: int, cls_only: bool, module, args, output: Tensor
    ) -> None:
        if self.capturing:
            store[layer] = output[:, 0] if cls_only else output

    def _grab_input(self, layer: int, module, args, kwargs) -> None:
        if self.capturing:
            self.captured_hidden[layer] = args[0] if args else kwargs["hidden_states"]

    def _grab_output(self, index: int, module, args, output) -> None:
        if self.capturing:
            self.captured_hidden[index] = output[0] if isinstance(output, tuple) else output

    def _vision_start(self, module, args) -> None:
        if self.capturing:
            _sync(self.inner.device)
            self.vision_start = time.perf_counter()

    def _vision_end(self, module, args, output) -> None:
        if self.capturing and self.stats is not None:
            _sync(self.inner.device)
            self.stats.vision_seconds += time.perf_counter() - self.vision_start

    # --- encoding -----------------------------------------------------------------------------
    def _wrap_get_image_features(self, original):
        @functools.wraps(original)
        def get_image_features(pixel_values, image_sizes, *args, **kwargs):
            if self.off:
                return original(pixel_values, image_sizes, *args, **kwargs)
            if self.pending is not None and self.pending[0] is pixel_values:
                return self.pending[1]
            self.stats = CompressionStats()
            self.capturing = True
            try:
                return original(pixel_values, image_sizes, *args, **kwargs)
            finally:
                self.capturing = False
                self.captured_q.clear()
                self.captured_k.clear()
                self.captured_hidden.clear()
                self.handle.last_stats = self.stats

        return get_image_features

    def _layout(self, image_size: Tensor) -> AnyResLayout:
        mcfg = self.inner.config
        return AnyResLayout.for_image(
            tuple(int(x) for x in image_size),
            mcfg.image_grid_pinpoints,
            mcfg.vision_config.image_size,
            mcfg.vision_config.patch_size,
        )

    def _image_tokens(self, index: int, features: Tensor, layout: AnyResLayout, offset: int) -> ImageTokens:
        views = slice(offset, offset + features.shape[0])
        heads = (
            self.layers[0].self_attn.num_heads
            if hasattr(self.layers[0].self_attn, "num_heads")
            else self.inner.config.vision_config.num_attention_heads
        )
        qk = {}
        for i in self.qk_layers:
            q, k = self.captured_q.get(i), self.captured_k.get(i)
            if q is None or k is None:
                raise RuntimeError(f"vision layer {i} did not run, so its attention could not be captured")
            attn = self.layers[i].self_attn
            q, k = q[views], k[views]
            qk[i] = LayerQK(q.view(q.shape[0], heads, -1), k.view(*k.shape[:2], heads, -1), attn.scale)
        hidden = {i: h[views] for i, h in self.captured_hidden.items()}
        sources = self.tower.owner[views] if self.tower is not None else None
        return ImageTokens(features, layout, qk, hidden, index, self.score_layer, self.num_layers, sources)

    def _pack_image_features(
        self, image_features, image_sizes, vision_feature_select_strategy, image_newline=None
    ):
        """Replacement of LlavaNextModel.pack_image_features: compress, then pack each image."""
        if not self.capturing:  # called from elsewhere (e.g. a user): stock behaviour
            return type(self.inner).pack_image_features(
                self.inner, image_features, image_sizes, vision_feature_select_strategy, image_newline
            )
        policy = getattr(self.config, "newline", "unpadded")
        packed, offset = [], 0
        for idx, feats in enumerate(image_features):
            if self.tower is None and feats.shape[1] != self.side * self.side:
                raise ValueError(f"expected {self.side**2} tokens per view, got {feats.shape[1]}")
            layout = self._layout(image_sizes[idx])
            if feats.shape[0] == 1:
                layout = AnyResLayout.single_view(self.side)
            tokens = self._image_tokens(idx, feats, layout, offset)
            offset += feats.shape[0]
            _sync(feats.device)
            start = time.perf_counter()
            if layout.has_crops or tokens.sources is not None:  # the tower merged every view
                outs = self.method.compress(tokens, self.config)
                note, view_policy = "", policy
            else:  # nothing to guide: LLaVA-NeXT's single-view images pass through
                outs, note, view_policy = (
                    keep_all(tokens),
                    "single view: passed through uncompressed",
                    "unpadded",
                )
            seq = pack_views(
                layout, [o.positions for o in outs], [o.features for o in outs], image_newline, view_policy
            )
            _sync(feats.device)
            seconds = time.perf_counter() - start
            packed.append(seq)
            self.stats.compress_seconds += seconds
            self.stats.images.append(
                self._image_stats(idx, image_sizes[idx], layout, outs, seq, seconds, note)
            )
        lens = torch.tensor([s.shape[0] for s in packed], dtype=torch.long, device=image_features[0].device)
        return packed, lens

    def _image_stats(self, idx, image_size, layout, outs: list[ViewOutput], seq, seconds, note) -> ImageStats:
        counts = layout.view_counts()
        names = ["thumbnail"] + [
            f"crop {j // layout.cols},{j % layout.cols}" for j in range(layout.rows * layout.cols)
        ]
        views = []
        for name, n, out in zip(names, counts, outs):
            pos = out.positions.tolist()
            views.append(
                ViewStats(
                    name,
                    n,
                    out.num_kept,
                    [divmod(p, layout.side) for p in pos],
                    out.sizes.tolist() if out.sizes is not None else None,
                    dict(out.info) if out.info else {},
                    sources=[[divmod(int(p), layout.side) for p in src.tolist()] for src in out.sources]
                    if out.sources is not None
                    else None,
                )
            )
        after = sum(o.num_kept for o in outs)
        return ImageStats(
            index=idx,
            image_size=tuple(int(x) for x in image_size),
            grid=(layout.rows, layout.cols),
            method=self.config.method,
            ratio=self.config.ratio,
            tokens_before=layout.num_tokens(),
            tokens_after=after,
            newlines_before=layout.num_newlines("unpadded"),
            newlines_after=seq.shape[0] - after,
            seconds=seconds,
            views=views,
            passthrough=bool(note),
            note=note,
        )

    # --- sequence surgery -----------------------------------------------------------------------
    def _encode(self, pixel_values: Tensor, image_sizes: Tensor, kwargs: dict[str, Any]):
        extra = {
            k: kwargs[k]
            for k in ("vision_feature_layer", "vision_feature_select_strategy")
            if kwargs.get(k) is not None
        }
        return self.inner.get_image_features(pixel_values, image_sizes, return_dict=True, **extra)

    def _shorten(self, args: dict[str, Any], features) -> dict[str, Any]:
        """Cut placeholder runs to the compressed lengths; fills sample stats."""
        input_ids = args["input_ids"]
        new_lengths = [int(f.shape[0]) for f in features.pooler_output]
        old_lengths = [im.tokens_before + im.newlines_before for im in self.stats.images]
        extras = {
            k: args[k]
            for k in ("labels", "position_ids", "token_type_ids")
            if isinstance(args.get(k), Tensor)
        }
        pad = self.inner.config.text_config.pad_token_id
        if pad is None:
            pad = getattr(getattr(self.model, "generation_config", None), "pad_token_id", None) or 0
        out = shorten_placeholder_runs(
            input_ids,
            self.inner.config.image_token_id,
            old_lengths,
            new_lengths,
            args.get("attention_mask"),
            extras,
            int(pad),
        )
        text_cfg = self.inner.config.text_config
        mask = args.get("attention_mask")
        before = (
            mask.sum(1) if mask is not None else torch.full((input_ids.shape[0],), input_ids.shape[1])
        ).tolist()
        after = out.attention_mask.sum(1).tolist()
        self.stats.samples = [
            SampleStats(
                b,
                int(n0),
                int(n1),
                decoder_prefill_flops(text_cfg, int(n0)),
                decoder_prefill_flops(text_cfg, int(n1)),
            )
            for b, (n0, n1) in enumerate(zip(before, after))
        ]
        new = dict(args)
        new["input_ids"], new["attention_mask"] = out.input_ids, out.attention_mask
        new.update(out.extras)
        if isinstance(new.get("cache_position"), Tensor):
            new["cache_position"] = torch.arange(out.input_ids.shape[1], device=input_ids.device)
        return new

    def _needs_compression(self, args: dict[str, Any]) -> bool:
        if self.off or args.get("pixel_values") is None:
            return False
        if args.get("input_ids") is None:
            raise ValueError(
                "a compressed LLaVA-NeXT needs input_ids (not inputs_embeds) together with pixel_values"
            )
        return True

    def _wrap_forward(self, original):
        signature = inspect.signature(original)

        @functools.wraps(original)
        def forward(*args, **kwargs):
            bound = signature.bind_partial(*args, **kwargs)
            call = {
                **{k: v for k, v in bound.arguments.items() if k != "kwargs"},
                **bound.arguments.get("kwargs", {}),
            }
            if self.prepared or not self._needs_compression(call):
                return original(*args, **kwargs)
            features = self._encode(call["pixel_values"], call["image_sizes"], call)
            call = self._shorten(call, features)
            self.pending = (call["pixel_values"], features)
            try:
                return original(**call)
            finally:
                self.pending = None

        return forward

    def _wrap_generate(self, original):
        @functools.wraps(original)
        def generate(*args, **kwargs):
            if args:
                kwargs["input_ids"] = args[0]
                args = args[1:]
            if not self._needs_compression(kwargs):
                return original(*args, **kwargs)
            original_ids = kwargs["input_ids"]
            features = self._encode(kwargs["pixel_values"], kwargs["image_sizes"], kwargs)
            call = self._shorten(kwargs, features)
            self.pending, self.prepared = (call["pixel_values"], features), True
            try:
                out = original(*args, **call)
            finally:
                self.pending, self.prepared = None, False
            return _restore_prompt(out, original_ids, call["input_ids"].shape[1])

        return generate


def _restore_prompt(out: Any, original_ids: Tensor, short_len: int) -> Any:
    """Put the caller's own prompt ids back in front of the generated tokens."""
    if isinstance(out, Tensor):
        return torch.cat([original_ids, out[:, short_len:]], dim=1)
    if hasattr(out, "sequences"):
        out.sequences = torch.cat([original_ids, out.sequences[:, short_len:]], dim=1)
    return out
