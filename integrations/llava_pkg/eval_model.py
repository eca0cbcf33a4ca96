"""``vtcompress_llava``: lmms-eval's own ``llava`` model (the original LLaVA codebase, ``llava``
package) with vtcompress attached, so a paper run reads::

    lmms-eval --model vtcompress_llava \
        --model_args pretrained=liuhaotian/llava-v1.6-vicuna-7b,method=globalcom2,ratio=0.25 --tasks ...

model_args: every argument of lmms-eval's ``llava`` model (``pretrained``, ``conv_template``,
``device``, ``device_map``, ``batch_size``, ...), plus ``method`` and ``ratio`` (default
``globalcom2`` at 0.25; LLaVA-1.5 checkpoints have one view per image and refuse ``globalcom2``)
and any option of the method's config (e.g. ``allocation=paper``). Loading (float16), prompts,
image processing and decoding are lmms-eval's ``llava`` model's own; this class adds compression,
left padding for batches, the ``generate`` fix for transformers >= 4.38
(:mod:`vtcompress.integrations.llava_pkg.compat`) and each answer's record under
``token_counts.vtcompress``, as the other vtcompress models log it (:mod:`.records`).
Needs lmms-eval and the ``llava`` package in one environment (``.ci/llava-setup.sh``).
"""

from __future__ import annotations

import inspect
import json
import time
from typing import Any

import torch

from vtcompress.integrations.lmms_eval import extra_hint

try:
    from lmms_eval.api.instance import GenerationResult, Instance
    from lmms_eval.models.simple.llava import Llava
    from lmms_eval.utils import simple_parse_args_string
except ImportError as err:
    raise ImportError(extra_hint()) from err

from transformers import LogitsProcessorList

import vtcompress as vtc
from vtcompress.integrations.llava_pkg import HOST
from vtcompress.integrations.llava_pkg.compat import patch_generate
from vtcompress.integrations.llava_pkg.host import IMAGE_TOKEN_INDEX
from vtcompress.integrations.lmms_eval.model import CompressionTokenCounts, _FirstLogitsClock
from vtcompress.integrations.lmms_eval.records import BatchTiming, image_entry, prompt_fields, sample_record

LLAVA_ARGS = frozenset(inspect.signature(Llava.__init__).parameters) - {"self", "kwargs"}


class CompressedLlava(Llava):
    """``vtcompress_llava``: lmms-eval's ``llava`` model, compressed (see the module docstring)."""

    def __init__(self, method: str = HOST.default_method, ratio: float = 0.25, **kwargs: Any) -> None:
        options = {k: v for k, v in kwargs.items() if k not in LLAVA_ARGS}
        super().__init__(**{k: v for k, v in kwargs.items() if k in LLAVA_ARGS})
        model = self._model
        patch_generate(model)
        # Batched generation continues after each prompt: prompts padded on the left, and the
        # llava package re-pads its multimodal sequences on the side its config names.
        self._tokenizer.padding_side = "left"
        model.config.tokenizer_padding_side = "left"
        self.handle = vtc.compress(model, method, ratio=float(ratio), **options)
        self.method, self.ratio = self.handle.config.method, self.handle.config.ratio
        self._batch_records: list[dict[str, Any]] = []
        original = model.generate
        model.generate = lambda *args, **kw: self._generate_and_record(original, *args, **kw)

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """``--model_args`` win over the command line's ``--batch_size`` / ``--device``."""
        args = simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        extra.pop("max_batch_size", None)
        return cls(**args, **extra)

    def _generate_and_record(self, original, inputs, **kwargs):
        """The stock ``generate`` call, timed, with one record per prompt of the batch."""
        clock = _FirstLogitsClock(self._device)
        kwargs["logits_processor"] = LogitsProcessorList([clock])
        self.handle.last_stats = None  # set again by this call only if it sees images
        start = time.perf_counter()
        out = original(inputs, **kwargs)
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        end = time.perf_counter()
        stats = self.handle.last_stats
        timing = BatchTiming(
            batch_size=inputs.shape[0],
            vision_seconds=stats.vision_seconds if stats else 0.0,
            compress_seconds=stats.compress_seconds if stats else 0.0,
            prefill_seconds=(clock.time or end) - start,
            generate_seconds=end - start,
        )
        entries = [image_entry(im) for im in stats.images] if stats else []
        mask = kwargs.get("attention_mask")
        lengths = (
            mask.sum(1) if mask is not None else torch.full((inputs.shape[0],), inputs.shape[1])
        ).tolist()
        eos = self._tokenizer.eos_token_id
        cursor = 0
        for b, row in enumerate(out.tolist()):
            count = int((inputs[b] == IMAGE_TOKEN_INDEX).sum())
            sample = stats.samples[b] if stats is not None and b < len(stats.samples) else None
            stop = next((i for i, t in enumerate(row) if t == eos), None)
            self._batch_records.append(
                sample_record(
                    method=self.method,
                    ratio=self.ratio,
                    images=entries[cursor : cursor + count],
                    **prompt_fields(sample, int(lengths[b]), self._config),
                    output_tokens=len(row) if stop is None else stop + 1,
                    timing=timing,
                )
            )
            cursor += count
        return out

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """lmms-eval's ``llava`` generation, one batch per call, each answer with its record.

        Requests are grouped by generation kwargs and ordered as lmms-eval's ``llava`` orders
        them (longest prompt first, stable), so each call's one batch comes back in order.
        """
        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
        results: list[GenerationResult | None] = [None] * len(requests)
        for indices in groups.values():
            indices.sort(key=lambda i: (-len(self.tok_encode(requests[i].args[0])), requests[i].args[0]))
            for k in range(0, len(indices), self.batch_size):
                chunk = indices[k : k + self.batch_size]
                self._batch_records = []
                texts = super().generate_until([requests[i] for i in chunk])
                if len(self._batch_records) != len(chunk):
                    raise RuntimeError(f"expected {len(chunk)} records, got {len(self._batch_records)}")
                for i, text, record in zip(chunk, texts, self._batch_records):
                    counts = CompressionTokenCounts(
                        input_tokens=record["prompt_tokens_after"],
                        output_tokens=record["output_tokens"],
                        vtcompress=record,
                    )
                    results[i] = GenerationResult(text=text, token_counts=counts)
        return results
