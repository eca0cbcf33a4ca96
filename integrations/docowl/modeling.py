"""mPLUG-DocOwl1.5 as a native transformers model: ViT + H-Reducer + modality-adaptive LLaMA.

The language model is LLaMA-2 with mPLUG-Owl2's modality-adaptive module: every decoder layer
has two RMSNorms per norm site and two key/value projections, one for text tokens (index 0) and
one for image tokens (index 1), chosen per token by a modality indicator; queries, the output
projection and the MLP are shared. It is assembled from transformers' own Llama parts
(``LlamaRMSNorm``, ``LlamaMLP``, ``LlamaRotaryEmbedding``, ``apply_rotary_pos_emb``) and its
attention interface (SDPA by default, eager, or any registered backend), with a transformers
``Cache`` for generation. Parameter names equal the official checkpoints'.

Differences from the official code (all deliberate):

* Batches work: positions come from the attention mask (left padding), and every sample keeps
  its own image features. The official code uses ``arange`` positions and pads on the right.
* ``generate`` encodes images once, before the first step, and returns the prompt ids followed
  by the new tokens, also when a compressor shortened the visual part of the prompt.
* The image placeholder is a real token id (``config.image_token_id``, LLaMA's ``<unk>``) rather
  than -200, so logits processors that index by prompt ids keep working; the modality
  indicator says where features go.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache, DynamicCache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
    eager_attention_forward,
)

from vtcompress.integrations.docowl.configuration import DocOwlConfig
from vtcompress.integrations.docowl.vision import DocOwlVisionModel, HReducer, VisionEmbeddings
from vtcompress.pipeline import restore_prompt
from vtcompress.sequence import padding_side, row_padding

TEXT, IMAGE = 0, 1


class Multiway(nn.Module):
    """Two copies of a per-token module; ``multiway.0`` serves text tokens, ``multiway.1`` image tokens."""

    def __init__(self, make: Callable[[], nn.Module]):
        super().__init__()
        self.multiway = nn.ModuleList([make(), make()])

    def forward(self, x: Tensor, image_mask: Tensor | None) -> Tensor:
        """x: [B, T, C]; image_mask: bool [B, T] or None (all text)."""
        if image_mask is None:
            return self.multiway[TEXT](x)
        text_out = self.multiway[TEXT](x[~image_mask])
        image_out = self.multiway[IMAGE](x[image_mask])
        out = text_out.new_empty(*x.shape[:-1], text_out.shape[-1])
        out[~image_mask] = text_out
        out[image_mask] = image_out
        return out


class DocOwlAttention(nn.Module):
    """LLaMA attention with modality-specific k/v projections (queries and ``o_proj`` shared)."""

    def __init__(self, config: DocOwlConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim or config.hidden_size // config.num_attention_heads
        self.num_key_value_groups = config.num_attention_heads // config.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True
        h, bias = config.hidden_size, config.attention_bias
        kv = config.num_key_value_heads * self.head_dim
        self.q_proj = nn.Linear(h, config.num_attention_heads * self.head_dim, bias=bias)
        self.k_proj = Multiway(lambda: nn.Linear(h, kv, bias=bias))
        self.v_proj = Multiway(lambda: nn.Linear(h, kv, bias=bias))
        self.o_proj = nn.Linear(config.num_attention_heads * self.head_dim, h, bias=bias)

    def forward(
        self,
        hidden_states: Tensor,
        image_mask: Tensor | None,
        position_embeddings: tuple[Tensor, Tensor],
        attention_mask: Tensor | None,
        cache: Cache | None = None,
    ) -> Tensor:
        shape = (*hidden_states.shape[:-1], -1, self.head_dim)
        q = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        k = self.k_proj(hidden_states, image_mask).view(shape).transpose(1, 2)
        v = self.v_proj(hidden_states, image_mask).view(shape).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        impl = self.config._attn_implementation or "sdpa"
        attend = eager_attention_forward if impl == "eager" else ALL_ATTENTION_FUNCTIONS[impl]
        out, _ = attend(
            self,
            q,
            k,
            v,
            attention_mask,
            dropout=self.attention_dropout if self.training else 0.0,
            scaling=self.scaling,
        )
        return self.o_proj(out.reshape(*hidden_states.shape[:-1], -1).contiguous())


class DocOwlDecoderLayer(nn.Module):
    def __init__(self, config: DocOwlConfig, layer_idx: int):
        super().__init__()
        h, eps = config.hidden_size, config.rms_norm_eps
        self.self_attn = DocOwlAttention(config, layer_idx)
        self.mlp = LlamaMLP(config)
        self.input_layernorm = Multiway(lambda: LlamaRMSNorm(h, eps=eps))
        self.post_attention_layernorm = Multiway(lambda: LlamaRMSNorm(h, eps=eps))

    def forward(
        self,
        hidden_states: Tensor,
        image_mask: Tensor | None,
        position_embeddings: tuple[Tensor, Tensor],
        attention_mask: Tensor | None,
        cache: Cache | None = None,
    ) -> Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states, image_mask)
        hidden_states = residual + self.self_attn(
            hidden_states, image_mask, position_embeddings, attention_mask, cache
        )
        residual = hidden_states
        hidden_states = self.mlp(self.post_attention_layernorm(hidden_states, image_mask))
        return residual + hidden_states


def additive_causal_mask(
    attention_mask: Tensor | None,
    batch: int,
    q_len: int,
    past_len: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor:
    """[B, 1, Q, K] additive mask (0 = attend, dtype min = blocked), K = past + Q.

    Query i sits at sequence position ``past_len + i``; ``attention_mask`` ([B, K], 1 = real
    token) blocks padding. Fully blocked rows (queries on left padding) stay finite.
    """
    k_len = past_len + q_len
    keys = torch.arange(k_len, device=device)
    allowed = keys[None, :] <= (past_len + torch.arange(q_len, device=device))[:, None]  # [Q, K]
    allowed = allowed[None].expand(batch, -1, -1)
    if attention_mask is not None:
        if attention_mask.shape[-1] != k_len:
            raise ValueError(
                f"attention_mask covers {attention_mask.shape[-1]} positions, expected {k_len} "
                f"(cached {past_len} + new {q_len})"
            )
        allowed = allowed & attention_mask.bool()[:, None, :]
    mask = torch.zeros(batch, 1, q_len, k_len, dtype=dtype, device=device)
    return mask.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


def positions_from_mask(
    attention_mask: Tensor | None, batch: int, q_len: int, past_len: int, device
) -> Tensor:
    """[B, Q] position ids: count of real tokens before each position (left padding aware)."""
    if attention_mask is None:
        return (past_len + torch.arange(q_len, device=device))[None].expand(batch, -1)
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.clamp_min(0)[:, -q_len:]


class DocOwlPreTrainedModel(PreTrainedModel):
    config_class = DocOwlConfig
    config: DocOwlConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules = ["DocOwlDecoderLayer", "VisionLayer"]
    _supports_sdpa = True
    _supports_attention_backend = True
    # transformers 4.31 saved the rotary tables inside each attention layer.
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        # transformers' default covers Linear/Conv/Embedding/norms and rebuilds the rotary tables
        # (non-persistent buffers) after loading; only DocOwl's own free parameters are added.
        super()._init_weights(module)
        std = getattr(self.config, "initializer_range", 0.02)
        if isinstance(module, HReducer):
            init.normal_(module.vit_eos, mean=0.0, std=std)
        elif isinstance(module, VisionEmbeddings):
            init.normal_(module.cls_token, mean=0.0, std=std)
            init.normal_(module.position_embedding, mean=0.0, std=std)


class DocOwlModel(DocOwlPreTrainedModel):
    """Decoder stack plus ``vision_model`` and ``vision2text`` (official names)."""

    def __init__(self, config: DocOwlConfig):
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DocOwlDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.vision_model = DocOwlVisionModel(config.vision_spec)
        self.vision2text = HReducer(config.hreducer_spec, config.hidden_size)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embed_tokens = value

    def decode(
        self,
        inputs_embeds: Tensor,
        modality_indicators: Tensor | None,
        attention_mask: Tensor | None,
        position_ids: Tensor | None,
        cache: Cache | None,
    ) -> Tensor:
        """Run the decoder on embeddings [B, Q, H]; returns final-normed hidden states [B, Q, H]."""
        b, q_len, _ = inputs_embeds.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, b, q_len, past, inputs_embeds.device)
        mask = additive_causal_mask(attention_mask, b, q_len, past, inputs_embeds.dtype, inputs_embeds.device)
        image_mask = None
        if modality_indicators is not None and bool((modality_indicators == IMAGE).any()):
            image_mask = modality_indicators == IMAGE
        hidden = inputs_embeds
        position_embeddings = self.rotary_emb(hidden, position_ids)
        for layer in self.layers:
            hidden = layer(hidden, image_mask, position_embeddings, mask, cache)
        return self.norm(hidden)


@dataclass
class VisualBatch:
    """The visual part of a batch, as the processor describes it.

    features: [V, T, H] per-view LLM tokens (T = 257: 256 H-Reducer outputs + ``vit_eos``).
    image_grids: long [I, 3] per image (global views 0/1, rows, cols); views are ordered image by
        image, global view first, crops row-major.
    vit_hidden: [V, 1+P, D] ViT output (kept for compressors).
    image_sizes: long [I, 2] (height, width) of the original images, when known.
    """

    features: Tensor
    image_grids: Tensor | None = None
    vit_hidden: Tensor | None = None
    image_sizes: Tensor | None = None


# A view compressor maps the visual batch to per-view LLM tokens: list of [k_v, H] (vit_eos
# included). It may also have ``record_lengths(before, after)``: real prompt lengths per sample.
ViewCompressor = Callable[["DocOwlForConditionalGeneration", VisualBatch], list[Tensor]]


class DocOwlForConditionalGeneration(DocOwlPreTrainedModel, GenerationMixin):
    """mPLUG-DocOwl1.5: ``model.generate(**processor(images=..., text=...))``."""

    def __init__(self, config: DocOwlConfig):
        super().__init__(config)
        self.model = DocOwlModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        # Set by vtcompress.integrations.docowl.host; None = every view keeps all tokens.
        self.view_compressor: ViewCompressor | None = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    # --- images ---------------------------------------------------------------------------------
    def encode_images(
        self, pixel_values: Tensor, image_grids: Tensor | None = None, image_sizes: Tensor | None = None
    ) -> VisualBatch:
        """[V, 3, S, S] views -> :class:`VisualBatch` with [V, 257, H] features."""
        hidden = self.model.vision_model(pixel_values)
        return VisualBatch(self.model.vision2text(hidden), image_grids, hidden, image_sizes)

    def view_tokens(
        self, pixel_values: Tensor, image_grids: Tensor | None = None, image_sizes: Tensor | None = None
    ) -> list[Tensor]:
        """Per view, the LLM tokens it contributes ([k_v, H]); all 257 unless a compressor is set."""
        visual = self.encode_images(pixel_values, image_grids, image_sizes)
        if self.view_compressor is None:
            return list(visual.features.unbind(0))
        return self.view_compressor(self, visual)

    def merge_inputs(
        self,
        input_ids: Tensor,
        attention_mask: Tensor | None,
        pixel_values: Tensor,
        image_grids: Tensor | None = None,
        modality_indicators: Tensor | None = None,
        labels: Tensor | None = None,
        image_sizes: Tensor | None = None,
    ) -> dict[str, Tensor | None]:
        """Encode the images once and build the decoder inputs.

        Each view owns ``config.tokens_per_view`` consecutive image positions of ``input_ids``
        (in order: sample by sample, view by view). Its features replace them; when a compressor
        keeps k_v tokens of a view, its run is shortened to k_v and the batch is re-padded on the
        input's side (:func:`~vtcompress.sequence.padding_side`). Returns inputs_embeds [B, L, H],
        attention_mask [B, L], modality_indicators [B, L] and labels (image positions -100) when
        given.
        """
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if modality_indicators is None:
            modality_indicators = (input_ids == self.config.image_token_id) & attention_mask.bool()
        image_pos = modality_indicators.bool() & attention_mask.bool()
        per_view = self.config.tokens_per_view
        n_views = pixel_values.shape[0]
        if int(image_pos.sum()) != n_views * per_view:
            raise ValueError(
                f"the prompt holds {int(image_pos.sum())} image positions but {n_views} views need "
                f"{n_views} x {per_view}: build inputs with DocOwlProcessor, which expands each <|image|>"
            )
        views = self.view_tokens(pixel_values, image_grids, image_sizes)
        merged = self._splice(input_ids, attention_mask, image_pos, views, labels)
        record = getattr(self.view_compressor, "record_lengths", None)
        if record is not None:
            record(attention_mask.sum(1), merged["attention_mask"].sum(1))
        return merged

    def _splice(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        image_pos: Tensor,
        views: list[Tensor],
        labels: Tensor | None,
    ) -> dict[str, Tensor | None]:
        """Put each view's tokens at its placeholder run, shortening runs and re-padding if needed."""
        b, device, per_view = input_ids.shape[0], input_ids.device, self.config.tokens_per_view
        text_embeds = self.model.embed_tokens(input_ids.masked_fill(image_pos, 0))
        if all(v.shape[0] == per_view for v in views):
            # Nothing shortened: splice in place (no re-padding, positions unchanged).
            embeds = text_embeds.masked_scatter(image_pos[..., None], torch.cat(views).to(text_embeds.dtype))
            return {
                "inputs_embeds": embeds,
                "attention_mask": attention_mask,
                "modality_indicators": image_pos.long(),
                "labels": None if labels is None else labels.masked_fill(image_pos, -100),
            }
        rows_e, rows_m, rows_l = [], [], []
        view_iter = iter(views)
        for i in range(b):
            keep = attention_mask[i].bool()
            pieces_e, pieces_m, pieces_l = [], [], []
            idx = torch.nonzero(keep).squeeze(1)
            j = 0
            while j < len(idx):
                p = int(idx[j])
                if image_pos[i, p]:
                    feats = next(view_iter).to(text_embeds.dtype)
                    pieces_e.append(feats)
                    pieces_m.append(torch.ones(feats.shape[0], dtype=torch.long, device=device))
                    pieces_l.append(torch.full((feats.shape[0],), -100, dtype=torch.long, device=device))
                    j += per_view
                else:
                    start = j
                    while j < len(idx) and not image_pos[i, int(idx[j])]:
                        j += 1
                    sel = idx[start:j]
                    pieces_e.append(text_embeds[i, sel])
                    pieces_m.append(torch.zeros(len(sel), dtype=torch.long, device=device))
                    pieces_l.append(labels[i, sel] if labels is not None else pieces_m[-1])
            rows_e.append(torch.cat(pieces_e))
            rows_m.append(torch.cat(pieces_m))
            rows_l.append(torch.cat(pieces_l))
        length = max(r.shape[0] for r in rows_e)
        left = padding_side(*(t.tolist() for t in row_padding(attention_mask)))
        embeds = text_embeds.new_zeros(b, length, text_embeds.shape[-1])
        mask = attention_mask.new_zeros(b, length)
        modality = torch.zeros(b, length, dtype=torch.long, device=device)
        new_labels = torch.full((b, length), -100, dtype=torch.long, device=device)
        for i in range(b):
            k = rows_e[i].shape[0]
            row = slice(length - k, length) if left else slice(0, k)
            embeds[i, row] = rows_e[i]
            mask[i, row] = 1
            modality[i, row] = rows_m[i]
            new_labels[i, row] = rows_l[i]
        return {
            "inputs_embeds": embeds,
            "attention_mask": mask,
            "modality_indicators": modality,
            "labels": new_labels if labels is not None else None,
        }

    # --- forward / generate ---------------------------------------------------------------------
    def forward(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: Tensor | None = None,
        pixel_values: Tensor | None = None,
        image_grids: Tensor | None = None,
        modality_indicators: Tensor | None = None,
        labels: Tensor | None = None,
        use_cache: bool | None = None,
        image_sizes: Tensor | None = None,
        logits_to_keep: int | Tensor = 0,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast:
        """Logits for ``input_ids`` (with image placeholders) or ``inputs_embeds``.

        ``pixel_values`` [V, 3, S, S] are encoded when given with ``input_ids``; with a compressor
        the returned logits cover the shortened sequence. ``modality_indicators`` [B, T] (1 = image
        position) is used when it covers the new positions; otherwise they are text (generated
        tokens always are). ``cache`` is transformers 5.2x's name of ``past_key_values``.
        """
        cache = cache if cache is not None else past_key_values
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        if pixel_values is not None and input_ids is not None:
            merged = self.merge_inputs(
                input_ids, attention_mask, pixel_values, image_grids, modality_indicators, labels, image_sizes
            )
            inputs_embeds, attention_mask = merged["inputs_embeds"], merged["attention_mask"]
            modality_indicators, labels = merged["modality_indicators"], merged["labels"]
            input_ids, position_ids = None, None
        if inputs_embeds is None:
            if modality_indicators is None or modality_indicators.shape[-1] != input_ids.shape[-1]:
                modality_indicators = None
            inputs_embeds = self.model.embed_tokens(input_ids)
        elif modality_indicators is not None and modality_indicators.shape[-1] != inputs_embeds.shape[1]:
            modality_indicators = None
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and cache is None:
            cache = DynamicCache(config=self.config)
        hidden = self.model.decode(
            inputs_embeds, modality_indicators, attention_mask, position_ids, cache if use_cache else None
        )
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep])
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1].float().reshape(-1, logits.shape[-1])
            loss = nn.functional.cross_entropy(shift_logits, labels[:, 1:].reshape(-1), ignore_index=-100)
        cache_field = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
        return CausalLMOutputWithPast(loss=loss, logits=logits, **{cache_field: cache if use_cache else None})

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
        pixel_values: Tensor | None = None,
        image_grids: Tensor | None = None,
        modality_indicators: Tensor | None = None,
        image_sizes: Tensor | None = None,
        **kwargs: Any,
    ):
        """transformers' ``generate`` with the images encoded (and compressed) once, up front.

        Returns the given ``input_ids`` followed by the new tokens, so ``out[:, input_ids.shape[1]:]``
        is the answer whether or not the visual part was shortened.
        """
        if pixel_values is None:
            return super().generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        if input_ids is None:
            raise ValueError("pixel_values need input_ids with image placeholders (use DocOwlProcessor)")
        merged = self.merge_inputs(
            input_ids, attention_mask, pixel_values, image_grids, modality_indicators, image_sizes=image_sizes
        )
        out = super().generate(
            inputs_embeds=merged["inputs_embeds"],
            attention_mask=merged["attention_mask"],
            modality_indicators=merged["modality_indicators"],
            **kwargs,
        )
        # generate from embeddings returns only the new tokens: the caller's prompt goes in front.
        return restore_prompt(out, input_ids, 0)
