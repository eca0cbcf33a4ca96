"""Compressed LLaVA-NeXT for vLLM: vLLM's own model and multimodal processor, plus vtcompress.

* The processor (``CompressedLlavaNextProcessor``) resolves each request's settings
  (:mod:`vtcompress.integrations.vllm.settings`), refuses bad ones with a ValueError naming the
  field, sizes each image's placeholder run by the exact-budget rule, and attaches the resolved
  config to the image's tensors (``vtcompress_config``). vLLM hashes ``mm_processor_kwargs``
  into an image's cache identity, so prefix and encoder caches never mix two ratios.
* The model (``CompressedLlavaNextForConditionalGeneration``) runs vLLM's vision tower and
  projector, captures what the method scores with (inputs of vision layers; [CLS] query and
  keys), runs :func:`vtcompress.pipeline.compress_image` per image and packs the kept tokens
  with :func:`~vtcompress.packing.pack_views`. An image whose config is
  off (ratio 1.0) goes through vLLM's own packing, untouched.

vLLM builds the vision tower only up to the feature layer; the layer after it (the one the
transformers host scores with) exists here only as its LayerNorm and q/k projections
(:class:`NextLayerQK`), loaded from the checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from torch import Tensor, nn
from transformers import BatchFeature
from vllm.config import VllmConfig
from vllm.model_executor.models.llava import LlavaDummyInputsBuilder
from vllm.model_executor.models.llava_next import (
    LlavaNextForConditionalGeneration,
    LlavaNextImagePixelInputs,
    LlavaNextMultiModalProcessor,
    LlavaNextProcessingInfo,
)
from vllm.multimodal import MULTIMODAL_REGISTRY
from vllm.multimodal.inputs import MultiModalFieldConfig
from vllm.multimodal.parse import ImageEmbeddingItems, ImageProcessorItems
from vllm.multimodal.processing import PromptReplacement, PromptUpdate

from vtcompress.config import CompressionConfig
from vtcompress.integrations.vllm import settings
from vtcompress.packing import pack_views
from vtcompress.pipeline import compress_image
from vtcompress.registry import get_method
from vtcompress.tokens import ImageTokens, LayerQK

FIELD = "vtcompress_config"


class CompressedLlavaNextProcessingInfo(LlavaNextProcessingInfo):
    def get_mm_max_tokens_per_item(self, seq_len: int, mm_counts: Mapping[str, int]) -> Mapping[str, int]:
        """The uncompressed maximum: a request may ask for a larger ratio than the server's,
        so the encoder cache is sized for ratio 1.0, not from the server setting's dummy run."""
        return {"image": self.get_max_image_tokens()}


class CompressedLlavaNextProcessor(LlavaNextMultiModalProcessor):
    """vLLM's LLaVA-NeXT processor with vtcompress's placeholder counts."""

    def _geometry(self) -> settings.VisionGeometry:
        return settings.VisionGeometry.from_hf_config(self.info.get_hf_config())

    def _config(self, hf_kwargs: Mapping[str, object]) -> CompressionConfig:
        server = settings.server_settings(self.info.get_hf_config())
        request = hf_kwargs.get(settings.KEY)
        return settings.resolve(
            server, request, self._geometry(), where=f"mm_processor_kwargs.{settings.KEY}"
        )

    def _call_hf_processor(
        self, hf_data: Mapping[str, object], hf_kwargs: Mapping[str, object]
    ) -> BatchFeature:
        config = self._config(hf_kwargs)  # raises before any work on a bad request
        hf_kwargs = {k: v for k, v in hf_kwargs.items() if k != settings.KEY}
        processed = super()._call_hf_processor(hf_data, hf_kwargs)
        sizes = processed.get("image_sizes")
        if sizes is not None:
            processed[FIELD] = [settings.encode(config) for _ in range(len(sizes))]
        return processed

    def _get_mm_fields_config(
        self, hf_inputs: BatchFeature, hf_processor_mm_kwargs: Mapping[str, object]
    ) -> Mapping[str, MultiModalFieldConfig]:
        fields = dict(super()._get_mm_fields_config(hf_inputs, hf_processor_mm_kwargs))
        fields[FIELD] = MultiModalFieldConfig.batched("image", keep_on_cpu=True)
        return fields

    def _get_prompt_updates(self, mm_items, hf_processor_mm_kwargs, out_mm_kwargs) -> Sequence[PromptUpdate]:
        stock = super()._get_prompt_updates(mm_items, hf_processor_mm_kwargs, out_mm_kwargs)
        config = self._config(hf_processor_mm_kwargs)
        if config.is_off:
            return stock
        geometry = self._geometry()
        token = self.info.get_hf_config().image_token_index

        def replacement(item_idx: int) -> list[int]:
            images = mm_items.get_items("image", (ImageEmbeddingItems, ImageProcessorItems))
            if isinstance(images, ImageEmbeddingItems):  # precomputed embeddings: their own length
                return [token] * images.get_feature_size(item_idx)
            size = images.get_image_size(item_idx)
            layout = geometry.layout(size.height, size.width)
            return [token] * settings.placeholder_count(config, layout)

        return [PromptReplacement(modality="image", target=[token], replacement=replacement)]


class NextLayerQK(nn.Module):
    """LayerNorm and q/k projections of the vision layer after vLLM's truncated tower.

    Replicated on every rank (no tensor parallelism): it computes full-width [CLS] queries and
    keys from the tower's output. ``prefix`` is the checkpoint name of that layer.
    """

    def __init__(self, vision_config: Any, prefix: str) -> None:
        super().__init__()
        width = vision_config.hidden_size
        self.prefix = prefix
        self.layer_norm1 = nn.LayerNorm(width, eps=vision_config.layer_norm_eps)
        self.q_proj = nn.Linear(width, width)
        self.k_proj = nn.Linear(width, width)

    def forward(self, hidden: Tensor) -> tuple[Tensor, Tensor]:
        """hidden [V, 1+N, C] -> (q [V, 1+N, C], k [V, 1+N, C])."""
        x = self.layer_norm1(hidden)
        return self.q_proj(x), self.k_proj(x)

    def take(self, name: str) -> str | None:
        """The parameter name in this module of checkpoint weight ``name`` (None: not ours)."""
        for stem in ("", "model."):
            head = stem + self.prefix
            if name.startswith(head):
                rest = name[len(head) :].replace("self_attn.", "")
                return rest if rest in dict(self.named_parameters()) else None
        return None


@MULTIMODAL_REGISTRY.register_processor(
    CompressedLlavaNextProcessor, info=CompressedLlavaNextProcessingInfo, dummy_inputs=LlavaDummyInputsBuilder
)
class CompressedLlavaNextForConditionalGeneration(LlavaNextForConditionalGeneration):
    """vLLM's LLaVA-NeXT whose image embeddings are compressed per image's vtcompress config."""

    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.geometry = settings.VisionGeometry.from_hf_config(self.config)
        # Fail at start-up, not on the first request, when the server's own settings are bad.
        settings.resolve(settings.server_settings(self.config), None, self.geometry)
        self._capturing: set[int] = set()  # hidden-state indices to keep during this call
        self._hidden: dict[int, Tensor] = {}
        self._qk: dict[int, tuple[Tensor, Tensor]] = {}
        tower = getattr(self.vision_tower, "vision_model", None)
        # A plain list: the layers stay children of the tower only (no second parameter name).
        self.vision_layers: list[nn.Module] = list(tower.encoder.layers) if tower is not None else []
        if self.vision_layers and len(self.vision_layers) != self.geometry.depth:
            raise RuntimeError(
                f"expected a vision tower of {self.geometry.depth} layers, got {len(self.vision_layers)}"
            )
        self.next_qk: NextLayerQK | None = None
        if self.vision_layers and self.geometry.depth < self.geometry.num_layers:
            with self._mark_tower_model(vllm_config, "image"):
                self.next_qk = NextLayerQK(
                    self.config.vision_config,
                    f"vision_tower.vision_model.encoder.layers.{self.geometry.depth}.",
                )
        for i, layer in enumerate(self.vision_layers):
            layer.register_forward_pre_hook(self._grab_input(i))
            layer.self_attn.qkv_proj.register_forward_hook(self._grab_qk(i))
        if self.vision_layers:
            self.vision_layers[-1].register_forward_hook(self._grab_output(len(self.vision_layers)))

    # --- capture --------------------------------------------------------------------------------
    def _grab_input(self, index: int):
        def hook(module, args) -> None:
            if index in self._capturing:
                self._hidden[index] = args[0]

        return hook

    def _grab_output(self, index: int):
        def hook(module, args, output) -> None:
            if index in self._capturing:
                self._hidden[index] = output[0] if isinstance(output, tuple) else output

        return hook

    def _grab_qk(self, index: int):
        def hook(module, args, output) -> None:
            if -1 - index in self._capturing:  # q/k wanted: marked as -1 - layer
                q, k, _ = output[0].chunk(3, dim=-1)
                tp = getattr(self.vision_layers[index].self_attn, "tp_size", 1)
                if tp > 1:  # each rank holds its own heads, in order: gather them
                    from vllm.distributed import tensor_model_parallel_all_gather

                    q, k = tensor_model_parallel_all_gather(q), tensor_model_parallel_all_gather(k)
                self._qk[index] = (q, k)

        return hook

    @contextlib.contextmanager
    def _capture(self, configs: list[CompressionConfig]) -> Iterator[None]:
        """Capture what ``configs`` need while the tower runs (inputs of layers, and q/k)."""
        want: set[int] = set()
        for config in configs:
            if config.is_off:
                continue
            qk, hidden = config.capture_layers(self.geometry.score_layer, self.geometry.num_layers)
            want |= hidden
            for i in qk:
                want |= {i} if i == len(self.vision_layers) else {-1 - i}
        self._capturing, self._hidden, self._qk = want, {}, {}
        try:
            yield
        finally:
            self._capturing = set()

    def _image_qk(self, config: CompressionConfig, views: slice) -> dict[int, LayerQK]:
        qk_layers, _ = config.capture_layers(self.geometry.score_layer, self.geometry.num_layers)
        heads = self.config.vision_config.num_attention_heads
        out = {}
        for i in sorted(qk_layers):
            if i == len(self.vision_layers):
                q, k = self.next_qk(self._hidden[i][views])
            else:
                q, k = (t[views] for t in self._qk[i])
            v, t = k.shape[:2]
            out[i] = LayerQK(
                q[:, 0].reshape(v, heads, -1), k.reshape(v, t, heads, -1), (k.shape[-1] // heads) ** -0.5
            )
        return out

    # --- embeddings -----------------------------------------------------------------------------
    def embed_multimodal(self, **kwargs: object):
        encoded = kwargs.pop(FIELD, None)
        image_input = self._parse_and_validate_image_input(**kwargs)
        if image_input is None:
            return []
        configs = [settings.decode(t) for t in encoded] if encoded is not None else []
        if not isinstance(image_input, LlavaNextImagePixelInputs) or all(c.is_off for c in configs):
            return self._process_image_input(image_input)
        with self._capture(configs):
            patch_embeddings = self._process_image_pixels(image_input)
        image_sizes = image_input["image_sizes"]
        out, offset = [], 0
        for i, (feats, config) in enumerate(zip(patch_embeddings, configs)):
            views = slice(offset, offset + feats.shape[0])
            offset += feats.shape[0]
            if config.is_off:
                out.append(
                    self._merge_image_patch_embeddings(image_sizes[i], feats, strategy="spatial_unpad")
                )
                continue
            height, width = (int(x) for x in image_sizes[i].tolist())
            out.append(self._compress_one(i, feats, config, height, width, views))
        self._hidden, self._qk = {}, {}
        return out

    def _compress_one(
        self, index: int, feats: Tensor, config: CompressionConfig, height: int, width: int, views: slice
    ) -> Tensor:
        """One image's compressed embeddings [T, D] from its per-view features [V', N, D]
        (V' >= V: vLLM may pad an image's views for batching)."""
        layout = self.geometry.layout(height, width)
        num_views = 1 + layout.rows * layout.cols
        used = slice(views.start, views.start + num_views)
        _, hidden_layers = config.capture_layers(self.geometry.score_layer, self.geometry.num_layers)
        tokens = ImageTokens(
            feats[:num_views],
            layout,
            self._image_qk(config, used),
            {i: self._hidden[i][used] for i in hidden_layers},
            index,
            self.geometry.score_layer,
            self.geometry.num_layers,
        )
        outs = compress_image(get_method(config.method), config, tokens)
        seq = pack_views(
            layout,
            [o.positions for o in outs],
            [o.features for o in outs],
            self.image_newline,
            config.newline_policy,
        )
        expected = settings.placeholder_count(config, layout)
        if seq.shape[0] != expected:
            raise RuntimeError(
                f"method {config.method!r} produced {seq.shape[0]} tokens for a {height}x{width} image; "
                f"its placeholder run has {expected} (the exact-budget rule)"
            )
        return seq

    # --- weights --------------------------------------------------------------------------------
    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> set[str]:
        if self.next_qk is None:
            return super().load_weights(weights)
        params = dict(self.next_qk.named_parameters())
        mine: set[str] = set()

        def split(ws):
            for name, w in ws:
                local = self.next_qk.take(name)
                if local is None:
                    yield name, w
                else:
                    params[local].data.copy_(w)
                    mine.add(f"next_qk.{local}")

        loaded = super().load_weights(split(weights))
        missing = sorted(set(params) - {m.removeprefix("next_qk.") for m in mine})
        if missing:
            raise ValueError(
                f"the checkpoint lacks vision layer {self.geometry.depth}'s {missing}, which vtcompress "
                "scores with; use a checkpoint with the full vision tower"
            )
        return loaded | mine
