"""The in-LM placement for transformers decoders (Llama / Qwen2 / Qwen2.5-VL text models): hooks
that drop image tokens between decoder layers, shared by every host that provides ``IN_LM``.

What :class:`LMPruner` installs (all removable through the host):

* a pre-hook on ``embed_tokens`` that remembers the call's ``input_ids`` (where the image
  placeholders are), and a pre-hook on the language model that starts each call: a prefill
  (empty cache, image placeholders present) prunes; a decode step with the cache of that prefill
  only needs the shortened attention masks; anything else runs untouched;
* a pre-hook on each decoder layer from ``K_0 - 1`` on. Before a stage's layer ``K`` it scores
  (through the method's :meth:`~vtcompress.lm_pruning.LMPruningConfig.select`), gathers the kept
  hidden states, ``position_embeddings`` (cos / sin, so kept tokens keep their positions, 3-D
  mRoPE included) and ``position_ids``, and builds the layers' attention mask with transformers'
  own ``create_causal_mask`` against the cache of layer ``K``; every layer ``>= K`` gets them.
  With a ``DynamicCache`` the layers ``>= K`` therefore only ever store kept tokens, and decode
  positions continue as in the uncompressed model (they come from layer 0's full cache).

Batches: every row keeps its own tokens. Rows whose images differ in size drop different
numbers of tokens; the rows that drop more keep their first surplus dropped tokens as masked
slots (never attended to, like padding), so tensors stay rectangular and each row's attention
equals its attention alone. Scores that use the prompt's last token use each row's last real
token, so right-padded batches are scored as their rows alone. Beams and
``num_return_sequences`` copy a prompt's rows before the prefill, so every copy keeps the same
tokens and reordering beams keeps the masks valid.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from vtcompress.flops import decoder_prefill_flops
from vtcompress.lm_pruning import (
    LMPruningConfig,
    LMStageInputs,
    apply_rope,
    first_positions,
    last_query_attention,
)
from vtcompress.stats import SampleStats

CACHE_KWARGS = ("cache", "past_key_values")


def _gather_rows(x: Tensor | None, index: Tensor, seq_dim: int) -> Tensor | None:
    """``x`` with its sequence dimension ``seq_dim`` (batch just before it) gathered by ``index``
    ([B, L'] positions); a batch dimension of 1 is broadcast first."""
    if x is None:
        return None
    batch_dim = seq_dim - 1
    shape = list(x.shape)
    shape[batch_dim] = index.shape[0]
    x = x.expand(*shape)
    view = [1] * x.dim()
    view[batch_dim], view[seq_dim] = index.shape
    full = list(x.shape)
    full[seq_dim] = index.shape[1]
    return x.gather(seq_dim, index.view(view).expand(full))


class _State:
    """One prefill's bookkeeping: the current tokens of every row (sequence order)."""

    def __init__(self, image: Tensor, valid: Tensor, text: Tensor, counts: list[int], texts: list[int]):
        b, n = image.shape
        self.index = torch.arange(n, device=image.device).expand(b, n)  # original positions
        self.image, self.valid, self.text = image, valid, text
        # Sizes per row, kept on the host so that no stage reads the device: the image tokens the
        # row entered with, its text tokens, its current candidates and masked (filler) slots.
        self.counts, self.texts, self.candidates, self.fillers = counts, texts, counts, [0] * b
        self.filler = torch.zeros_like(image)
        self.pe: Any = None  # (cos, sin) of the current tokens
        self.position_ids: Tensor | None = None
        self.mask: Any = None  # what layers of the current stage get as attention_mask
        self.previous_hidden: Tensor | None = None


class LMPruner:
    """Drops image tokens inside ``language_model`` as ``host.config`` (an
    :class:`~vtcompress.lm_pruning.LMPruningConfig`) says. ``structure(inputs_embeds, image)``
    (optional, bool [B, L]) marks placeholders that are always kept and not counted (newlines).
    """

    def __init__(
        self,
        host: Any,
        language_model: nn.Module,
        image_token_id: int,
        structure: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        config: LMPruningConfig = host.config
        self.host, self.config, self.lm = host, config, language_model
        self.layers = language_model.layers
        self.image_token_id, self.structure = image_token_id, structure
        self.stages = config.stages()
        n = len(self.layers)
        previous = 0
        for k, _ in self.stages:
            if not previous < k < n:
                raise ValueError(
                    f"{config.method}: stage layers must increase and lie in 1..{n - 1} for a language model "
                    f"of {n} decoder layers; got {[s[0] for s in self.stages]} (set them with the method's options)"
                )
            previous = k
        types = getattr(language_model.config, "layer_types", None) or []
        if any(t != "full_attention" for t in types):
            raise ValueError(
                f"{config.method} prunes inside the language model, which needs full attention in every "
                f"layer; this model has layer types {sorted(set(types))}"
            )
        self.first = self.stages[0][0]
        self._ids: Tensor | None = None
        self._mode: str | None = None
        self._state: _State | None = None
        self._stage_valid: list[Tensor] = []  # per stage, the prefill's attended tokens
        self._full_length = 0
        self._cache: Any = None
        self._lengths: list[Tensor] = []
        # Per stage of the last prefill: bool [B, L] over the original sequence, the image tokens kept.
        self.last_kept: list[Tensor] = []
        host.lm_pruner = self
        embed = language_model.get_input_embeddings()
        host.hook(embed.register_forward_pre_hook(self._remember_ids))
        host.hook(language_model.register_forward_pre_hook(self._begin, with_kwargs=True))
        host.hook(language_model.register_forward_hook(self._end))
        for i in range(self.first - 1, n):
            host.hook(self.layers[i].register_forward_pre_hook(self._layer_hook(i), with_kwargs=True))
        self._labels: Tensor | None = None
        self._final: tuple[Tensor, Tensor] | None = None  # last prefill: original index, masked slots
        host.hook(host.model.register_forward_pre_hook(self._take_labels, with_kwargs=True))
        host.hook(host.model.register_forward_hook(self._loss))

    # --- labels: the loss is taken on the tokens that reached the head -------------------------
    def _take_labels(self, module: nn.Module, args: tuple, kwargs: dict):
        if kwargs.get("labels") is None:
            return None
        self._labels = kwargs["labels"]
        return args, {**kwargs, "labels": None}

    def _loss(self, module: nn.Module, args: tuple, output: Any) -> None:
        labels, self._labels = self._labels, None
        if labels is None or getattr(output, "logits", None) is None:
            return
        final = self._final
        if final is not None and final[0].shape[1] == output.logits.shape[1]:
            index, filler = final
            labels = labels.to(index.device).gather(1, index).masked_fill(filler, -100)
        output.loss = module.loss_function(
            logits=output.logits, labels=labels, vocab_size=output.logits.shape[-1]
        )

    # --- call bookkeeping ------------------------------------------------------------------------
    def _remember_ids(self, module: nn.Module, args: tuple) -> None:
        self._ids = args[0] if args else None

    def _begin(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids, self._ids = self._ids, None
        embeds = kwargs.get("inputs_embeds")
        cache = next((kwargs[k] for k in CACHE_KWARGS if kwargs.get(k) is not None), None)
        past = cache.get_seq_length() if cache is not None else 0
        mask = kwargs.get("attention_mask")
        self._mode = None
        if past == 0:
            self._stage_valid, self._cache, self._state = [], cache, None
            if embeds is None or ids is None or ids.shape != embeds.shape[:2]:
                return
            image = ids == self.image_token_id
            marked = image & ~self.structure(embeds, image) if self.structure is not None else image
            mask_ok = mask is None or (isinstance(mask, Tensor) and mask.dim() == 2)
            valid = mask.bool() if mask is not None and mask_ok else torch.ones_like(image)
            positions = torch.arange(image.shape[1], device=image.device)
            last = torch.where(image, positions, -1).amax(1, keepdim=True)
            text = valid & (positions > last)
            # The call's one read: per row, the image tokens it counts and its text tokens.
            counts, texts = torch.stack([marked.sum(1), text.sum(1)]).tolist()
            if not any(counts):
                return
            self._placeholders = image
            if cache is not None and any(type(layer).__name__ != "DynamicLayer" for layer in cache.layers):
                raise ValueError(
                    f"{self.config.method} prunes inside the language model, so its layers hold different "
                    f"numbers of tokens: use the default DynamicCache (got {type(cache).__name__})"
                )
            self._check_mask(mask)
            self._full_length = ids.shape[1]
            self._state = _State(marked, valid, text, counts, texts)
            self._lengths = [valid.sum(1)]
            self.last_kept = []
            self._mode = "prefill"
        elif cache is self._cache and self._stage_valid:
            self._check_mask(mask)
            new = past + embeds.shape[1] - self._full_length
            if mask is not None:
                tail = mask[:, self._full_length :].bool()
            else:
                tail = torch.ones(embeds.shape[0], new, dtype=torch.bool, device=embeds.device)
            self._tail = tail
            self._mode = "decode"

    def _check_mask(self, mask: Any) -> None:
        if mask is not None and not (isinstance(mask, Tensor) and mask.dim() == 2):
            raise ValueError(
                f"{self.config.method} prunes inside the language model and needs a 2-D attention_mask "
                "(batch, length) or none; got a prepared mask"
            )

    def _end(self, module: nn.Module, args: tuple, output: Any) -> None:
        self._final = None
        if self._mode == "prefill" and self._state is not None:
            self._publish_stats()
            self._final = (self._state.index, self._state.filler)
        self._mode = None
        if self._cache is None:  # no cache: nothing to decode later
            self._stage_valid, self._state = [], None

    # --- the layers ------------------------------------------------------------------------------
    def _layer_hook(self, i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if self._mode is None:
                return None
            hidden = args[0] if args else kwargs["hidden_states"]
            stage = next((s for s, (k, _) in enumerate(self.stages) if k == i), None)
            if self._mode == "prefill":
                state = self._state
                if self._cache is None:  # a cache the language model created itself
                    self._cache = next((kwargs[k] for k in CACHE_KWARGS if kwargs.get(k) is not None), None)
                if state.pe is None:
                    state.pe, state.position_ids = (
                        kwargs.get("position_embeddings"),
                        kwargs.get("position_ids"),
                    )
                if stage is not None:
                    hidden = self._prune(stage, i, hidden)
                if i + 1 < len(self.layers) and any(k == i + 1 for k, _ in self.stages):
                    state.previous_hidden = hidden
                if i < self.first:
                    return None
                kwargs = {**kwargs, "attention_mask": state.mask, "position_embeddings": state.pe}
                if kwargs.get("position_ids") is not None:
                    kwargs["position_ids"] = state.position_ids
            else:
                if i < self.first:
                    return None
                if stage is not None:
                    valid = torch.cat([self._stage_valid[stage], self._tail.to(hidden.device)], dim=1)
                    self._decode_mask = self._causal_mask(hidden, valid, i)
                kwargs = {**kwargs, "attention_mask": self._decode_mask}
            if args:
                return (hidden, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden}

        return hook

    def _prune(self, stage: int, layer: int, hidden: Tensor) -> Tensor:
        state = self._state
        keep_per_row = [self.config.stage_count(stage, n) for n in state.counts]
        counts = torch.tensor(keep_per_row, device=hidden.device)
        inputs = LMStageInputs(
            candidates=state.image,
            valid=state.valid,
            text=state.text,
            counts=counts,
            hidden=hidden,
            previous_hidden=state.previous_hidden,
            last_attention=self._last_attention,
            post_rope_keys=self._post_rope_keys,
            final_norm=self.lm.norm,
            keep_per_row=keep_per_row,
            candidates_per_row=state.candidates,
            text_per_row=state.texts,
        )
        chosen = self.config.select(stage, inputs)
        # Checked on the device (asynchronous on a GPU): a read here would cost a sync per stage.
        torch._assert_async(
            (chosen.sum(1) == counts).all() & ~(chosen & ~state.image).any(),
            f"{self.config.method} kept other tokens than its budget at layer {layer}",
        )
        droppable = (state.image & ~chosen) | state.filler
        # Rows that drop more keep their first surplus dropped tokens as masked slots, so every row
        # keeps the same number of positions; the sizes come from the host lists.
        dropped = [c - k + f for c, k, f in zip(state.candidates, keep_per_row, state.fillers)]
        surplus = [n - min(dropped) for n in dropped]
        filler = droppable & (droppable.cumsum(1) <= torch.tensor(surplus, device=hidden.device)[:, None])
        keep = ~droppable | filler
        length = keep.shape[1] - min(dropped)
        rows = first_positions(keep, length)
        state.candidates, state.fillers = keep_per_row, surplus
        state.index = state.index.gather(1, rows)
        state.image = chosen.gather(1, rows)
        state.filler = filler.gather(1, rows)
        state.valid = (state.valid & ~filler).gather(1, rows)
        state.text = state.text.gather(1, rows)
        if state.pe is not None:
            state.pe = tuple(_gather_rows(t, rows, t.dim() - 2) for t in state.pe)
        state.position_ids = (
            _gather_rows(state.position_ids, rows, state.position_ids.dim() - 1)
            if isinstance(state.position_ids, Tensor)
            else state.position_ids
        )
        hidden = _gather_rows(hidden, rows, 1)
        state.mask = self._causal_mask(hidden, state.valid, layer)
        self._stage_valid.append(state.valid)
        self._lengths.append(state.valid.sum(1))
        kept = torch.zeros(rows.shape[0], self._full_length, dtype=torch.bool, device=rows.device)
        self.last_kept.append(kept.scatter_(1, state.index, state.image))
        return hidden

    def _causal_mask(self, hidden: Tensor, valid: Tensor, layer: int) -> Any:
        from transformers.masking_utils import create_causal_mask

        return create_causal_mask(
            config=self.lm.config,
            inputs_embeds=hidden,
            attention_mask=valid,
            cache=self._cache,
            layer_idx=layer,
        )

    # --- what methods score with -----------------------------------------------------------------
    def _projected(self, layer: int, hidden: Tensor, query: bool) -> tuple[Tensor | None, Tensor, Any]:
        block = self.layers[layer]
        attn = block.self_attn
        x = block.input_layernorm(hidden)
        b, n, _ = x.shape
        head_dim = attn.head_dim
        keys = attn.k_proj(x).view(b, n, -1, head_dim).transpose(1, 2)
        cos, sin = (t.expand(b, *t.shape[1:]) for t in self._state.pe)
        keys = apply_rope(keys, cos, sin)
        q = None
        if query:  # each row's last real token: the last position only where no row is right padded
            valid = self._state.valid
            where = torch.arange(n, device=valid.device).expand_as(valid)
            last = torch.where(valid, where, -1).amax(1).clamp_min(0).to(x.device)
            rows = torch.arange(b, device=x.device)
            q = attn.q_proj(x[rows, last][:, None]).view(b, 1, -1, head_dim).transpose(1, 2)
            q = apply_rope(q, cos[rows, last][:, None], sin[rows, last][:, None])[:, :, 0]
        return q, keys, attn

    def _last_attention(self, layer: int, hidden: Tensor) -> Tensor:
        q, keys, attn = self._projected(layer, hidden, query=True)
        return last_query_attention(q, keys, self._state.valid, attn.scaling)

    def _post_rope_keys(self, layer: int, hidden: Tensor) -> Tensor:
        return self._projected(layer, hidden, query=False)[1]

    # --- stats -----------------------------------------------------------------------------------
    def _publish_stats(self) -> None:
        """Per sequence: prompt length before, the length entering the last stage, and FLOPs with
        every layer counted at the length it ran (layers < K_0 at the full length). Per image: its
        kept tokens. Everything comes back in one device read."""
        stats = self.host.stats
        if stats is None:
            return
        cfg = self.lm.config
        bounds = [0] + [k for k, _ in self.stages] + [len(self.layers)]
        rows = self._lengths[0].shape[0]
        samples = stats.samples or []
        copies = rows // len(samples) if samples and rows % len(samples) == 0 else 1
        # Per image (batch order: rows in order, each row's placeholder runs in order): its kept
        # tokens, summed into one slot per placeholder run; runs beyond the host's images go to a
        # last slot, and the number of runs says whether the two agree.
        placeholders = self._placeholders[::copies]
        kept = self.last_kept[-1][::copies] if self.last_kept else torch.zeros_like(placeholders)
        starts = placeholders & ~torch.nn.functional.pad(placeholders[:, :-1], (1, 0))
        images = len(stats.images)
        run = (starts.flatten().cumsum(0) - 1).clamp(max=images).view_as(placeholders)
        slot = torch.where(placeholders, run, images)
        per_run = torch.zeros(images + 1, dtype=torch.long, device=slot.device)
        per_run.scatter_add_(0, slot.flatten(), (kept & placeholders).flatten().long())
        lengths = torch.stack(self._lengths)[:, ::copies]  # [stages + 1, sequences]
        read = torch.cat([lengths.flatten(), per_run[:images], starts.sum()[None]]).tolist()
        stage_lengths = [
            read[i * lengths.shape[1] : (i + 1) * lengths.shape[1]] for i in range(lengths.shape[0])
        ]
        per_image, runs = read[lengths.numel() : -1], read[-1]
        new = []
        for s in range(lengths.shape[1]):
            row_lengths = [int(x[s]) for x in stage_lengths]
            spans = [bounds[j + 1] - bounds[j] for j in range(len(row_lengths))]
            after = sum(decoder_prefill_flops(cfg, n, layers=m) for n, m in zip(row_lengths, spans))
            before = decoder_prefill_flops(cfg, row_lengths[0])
            new.append(SampleStats(s, row_lengths[0], row_lengths[-1], before, after))
        stats.samples = new
        if runs == images:
            note = f"pruned inside the language model; layers 0-{bounds[1] - 1} saw every token"
            for image, n in zip(stats.images, per_image):
                image.tokens_after, image.note = int(n), note


def attach_lm_pruning(
    host: Any,
    language_model: nn.Module,
    image_token_id: int,
    structure: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> LMPruner | None:
    """Install an :class:`LMPruner` when ``host.config`` prunes inside the language model (and is
    not off: at ratio 1.0 nothing is installed, so the model runs exactly as before)."""
    if not isinstance(host.config, LMPruningConfig) or host.config.is_off:
        return None
    return LMPruner(host, language_model, image_token_id, structure)


def newline_marker(newline: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
    """``structure`` for LLaVA-style models: the image placeholders that hold the newline embedding."""

    def marks(embeds: Tensor, image: Tensor) -> Tensor:
        return image & (embeds == newline.to(embeds)).all(-1)

    return marks
