"""Hosts for transformers models whose processor expands each image into a run of placeholder
tokens (LLaVA-NeXT and its kin): the prompt surgery they share.

The processor sizes each run for the uncompressed features and the model checks it, so a
compressed model must encode the images first, then cut each run to its kept length (and the
attention mask, labels and position ids alike), re-pad, and only then run the stock code.
``forward`` returns logits over the shortened sequence; ``generate`` returns the caller's prompt
ids followed by the new tokens, for every returned sequence.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vtcompress.integrations.host import Host
from vtcompress.pipeline import restore_prompt, sample_stats
from vtcompress.sequence import ShortenedBatch, padding_side, row_padding, shorten_placeholder_runs


@dataclass
class CallReads:
    """What a wrapped call read back from the device, in one copy: per row its placeholder count
    and real length, the padding side (:func:`~vtcompress.sequence.padding_side`), per row its
    padding entries on that side, and the values of ``tensors`` (the call's
    :attr:`PlaceholderHost.read_keys`) as nested lists."""

    placeholders: list[int]
    lengths: list[int]
    left: bool
    padding: list[int]
    tensors: list[Tensor]
    values: list[list]


def _nested(flat: list, shape: list[int]) -> list:
    """``flat`` (row-major) as nested lists of ``shape``, as ``Tensor.tolist`` gives them."""
    if len(shape) <= 1:
        return list(flat)
    step = len(flat) // shape[0] if shape[0] else 0
    return [_nested(flat[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


class PlaceholderHost(Host):
    """A :class:`Host` that patches ``forward`` / ``generate`` of the outer model.

    Subclasses implement :meth:`encode` (run the vision path once, compressing; fill
    ``self.stats.images``) and set :attr:`image_token_id`, :attr:`text_config`; they call
    :meth:`patch_prompt_surgery` once their own hooks are in place. While a wrapped call runs,
    :meth:`encoded_for` returns what :meth:`encode` computed, so the stock code does not encode
    the same pixels twice.

    Device -> host reads: a wrapped call reads, in ONE copy, what the surgery needs on the host
    (each row's placeholder count and length, the padding side) and the small tensors named in
    :attr:`read_keys` (image sizes); :meth:`host_list` then hands those out without another read.
    Everything else (budgets, packing orders, new lengths) is known on the host.
    """

    image_token_id: int
    text_config: Any
    # Per-token [B, L, ...] tensors of a call that are cut with the prompt.
    cut_keys: ClassVar[tuple[str, ...]] = ("labels", "position_ids", "token_type_ids")
    # Small integer tensors of a call the host needs as numbers, read with the call's one copy.
    read_keys: ClassVar[tuple[str, ...]] = ("image_sizes",)
    # Call arguments that carry media to compress (a call with none of them runs untouched).
    media_keys: ClassVar[tuple[str, ...]] = ("pixel_values",)

    def encode(self, call: dict[str, Any]) -> tuple[Any, list[int]]:
        """Encode and compress ``call["pixel_values"]``: (what the stock code would get from its
        image-feature call, each image's new placeholder-run length in batch order)."""
        raise NotImplementedError

    def run_keep(self) -> list[Tensor] | None:
        """Per image (batch order), the ascending indices of its run's placeholders that stay,
        as the last :meth:`encode` chose them; None (default): the first new-length of them."""
        return None

    def cut_prompt(
        self,
        input_ids: Tensor,
        mask: Tensor | None,
        extras: dict[str, Tensor],
        pad: int,
        new_lengths: list[int],
        read: CallReads,
    ) -> ShortenedBatch:
        """Cut every placeholder run of the call to its compressed length (default: one run of
        ``image_token_id`` per image of ``stats.images`` to ``new_lengths``, keeping its
        :meth:`run_keep` placeholders; ``read``: what the call's one device read gave)."""
        old_lengths = [im.tokens_before + im.newlines_before for im in self.stats.images]
        return shorten_placeholder_runs(
            input_ids,
            self.image_token_id,
            old_lengths,
            new_lengths,
            mask,
            extras,
            pad,
            self.run_keep(),
            placeholders=read.placeholders,
            left=read.left,
            padding=read.padding,
        )

    def finish_call(
        self, call: dict[str, Any], original: dict[str, Any], cut: ShortenedBatch, generating: bool
    ) -> dict[str, Any]:
        """Last changes to a shortened ``call`` before the stock code runs it (default: none).

        ``original`` is the caller's call, ``cut`` how it was shortened, ``generating`` whether
        the stock code is ``generate`` (else ``forward``).
        """
        return call

    def patch_prompt_surgery(self, model: nn.Module) -> None:
        self._pending: tuple[Tensor, Any] | None = None
        self._read: CallReads | None = None
        self._prepared = False  # input_ids already shortened by our generate()
        self.patch(model, "forward", self._wrap_forward(model.forward))
        if hasattr(model, "generate"):
            self.patch(model, "generate", self._wrap_generate(model.generate))

    def patch_image_features(self, inner: nn.Module) -> None:
        """Patch ``inner.get_image_features(pixel_values, image_sizes, ...)`` (signature kept:
        ``generate`` selects arguments by it): inside a wrapped call it returns what
        :meth:`encode` computed for the same pixels; elsewhere it runs the stock encoder with
        capture on (:meth:`begin` / :meth:`end`)."""
        original = inner.get_image_features

        @functools.wraps(original)
        def get_image_features(pixel_values, image_sizes, *args, **kwargs):
            encoded = self.encoded_for(pixel_values)
            if encoded is not None:
                return encoded
            self.begin()
            try:
                return original(pixel_values, image_sizes, *args, **kwargs)
            finally:
                self.end()

        self.patch(inner, "get_image_features", get_image_features)

    def encoded_for(self, pixel_values: Tensor) -> Any | None:
        pending = self._pending
        if pending is None or pending[0] is None:
            return None
        return pending[1] if pending[0] is pixel_values else None

    def host_list(self, tensor: Tensor) -> list:
        """``tensor.tolist()``, without a device read when the wrapped call read it already."""
        if self._read is not None and any(t is tensor for t in self._read.tensors):
            return self._read.values[next(i for i, t in enumerate(self._read.tensors) if t is tensor)]
        return tensor.tolist()

    def _read_call(self, call: dict[str, Any]) -> CallReads:
        """The one device -> host copy of a wrapped call (see the class docstring)."""
        ids, mask = call["input_ids"], call.get("attention_mask")
        rows = [(ids == self.image_token_id).sum(1)]
        if mask is not None:
            rows += [(mask != 0).sum(1), *row_padding(mask)]
        tensors = [call[k] for k in self.read_keys if isinstance(call.get(k), Tensor)]
        flat = torch.cat([t.reshape(-1).long().to(ids.device) for t in rows + tensors]).tolist()
        b = ids.shape[0]
        parts = [flat[i * b : (i + 1) * b] for i in range(len(rows))]
        cursor = len(rows) * b
        values = []
        for t in tensors:
            values.append(_nested(flat[cursor : cursor + t.numel()], list(t.shape)))
            cursor += t.numel()
        if mask is None:
            return CallReads(parts[0], [ids.shape[1]] * b, True, [0] * b, tensors, values)
        left = padding_side(parts[2], parts[3])
        return CallReads(parts[0], parts[1], left, parts[2] if left else parts[3], tensors, values)

    def _shorten(
        self, call: dict[str, Any], new_lengths: list[int], generating: bool = False
    ) -> dict[str, Any]:
        """Cut placeholder runs to the compressed lengths; fills sample stats."""
        input_ids, mask = call["input_ids"], call.get("attention_mask")
        read = self._read if self._read is not None else self._read_call(call)
        extras = {k: call[k] for k in self.cut_keys if isinstance(call.get(k), Tensor)}
        pad = self.text_config.pad_token_id
        if pad is None:
            pad = getattr(getattr(self.model, "generation_config", None), "pad_token_id", None) or 0
        out = self.cut_prompt(input_ids, mask, extras, int(pad), new_lengths, read)
        after = [n - r for n, r in zip(read.lengths, out.removed)]
        self.stats.samples = sample_stats(self.text_config, read.lengths, after)
        new = {**call, "input_ids": out.input_ids, "attention_mask": out.attention_mask, **out.extras}
        if isinstance(new.get("cache_position"), Tensor):
            new["cache_position"] = torch.arange(out.input_ids.shape[1], device=input_ids.device)
        return self.finish_call(new, call, out, generating)

    def _needs_compression(self, call: dict[str, Any]) -> bool:
        if all(call.get(key) is None for key in self.media_keys):
            return False
        if call.get("input_ids") is None:
            raise ValueError(
                f"a compressed {self.model_names} needs input_ids (not inputs_embeds) together with "
                f"{' or '.join(self.media_keys)}"
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
            if self._prepared or not self._needs_compression(call):
                return original(*args, **kwargs)
            self._read = self._read_call(call)
            try:
                features, new_lengths = self.encode(call)
                call = self._shorten(call, new_lengths)
            finally:
                self._read = None
            self._pending = (call.get("pixel_values"), features)
            try:
                return original(**call)
            finally:
                self._pending = None

        return forward

    def _wrap_generate(self, original):
        @functools.wraps(original)
        def generate(*args, **kwargs):
            if args:
                kwargs["input_ids"], args = args[0], args[1:]
            if not self._needs_compression(kwargs):
                return original(*args, **kwargs)
            self._read = self._read_call(kwargs)
            try:
                with torch.no_grad():  # as the stock generate, which runs under no_grad
                    features, new_lengths = self.encode(kwargs)
                    call = self._shorten(kwargs, new_lengths, generating=True)
            finally:
                self._read = None
            self._pending, self._prepared = (call.get("pixel_values"), features), True
            try:
                out = original(*args, **call)
            finally:
                self._pending, self._prepared = None, False
            return restore_prompt(out, kwargs["input_ids"], call["input_ids"].shape[1])

        return generate
