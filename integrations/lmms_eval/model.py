"""The shared base of vtcompress's lmms-eval models (one per family: each family's ``eval_model``).

model_args (``--model_args k=v,k=v``):
    pretrained   hub id or local directory (LLaVA-NeXT and Qwen2.5-VL also take ``tiny``, the offline
                 tiny model)
    method       a name from ``vtcompress.available_methods()`` (LLaVA-NeXT default ``globalcom2``,
                 DocOwl default ``tokencorr``, Qwen2.5-VL default ``uniform``)
    ratio        kept fraction of visual tokens in (0, 1]; ``1.0`` runs the untouched model
    batch_size   requests per ``generate`` call (model_args win over ``--batch_size``)
    device       ``cuda``, ``cuda:1``, ``cpu``; default: the rank's GPU if any, else CPU
    dtype        ``auto`` (checkpoint dtype on GPU, float32 on CPU), ``float16``, ``bfloat16``...
    device_map   LLaVA-NeXT, Qwen2.5-VL: passed to ``from_pretrained`` (e.g. ``auto`` to spread one model)
    attn_implementation; chat_template (LLaVA-NeXT, Qwen2.5-VL: a Jinja string; default: the processor's own;
                 DocOwl always uses its official ``mplug_owl2`` conversation)
    on_error     ``skip`` (default): a sample the model cannot process (an odd image, out of memory)
                 gets an empty answer and a record with its error, and the run goes on; ``raise``:
                 the run stops at the first such sample
    max_frames_num  frames sampled uniformly from a video (OneVision, Qwen2.5-VL; default: the
                 family's declared ``video_frames``, 32)
    any other key (e.g. ``allocation=paper``) is an option of the method's config.

Videos: a request whose visual is a file path (lmms-eval's video tasks) is a video sample on a
family that declares ``video_inputs`` (OneVision, Qwen2.5-VL): its frames are sampled uniformly
and its inputs built without the video processor (:mod:`vtcompress.integrations.video_frames`).
Video requests run one per ``generate`` call; their records say ``media: video`` and the frames.

Failures cannot pass unseen: lmms-eval exits 0 whatever happened, so at the end of an
``lmms-eval`` run this model says how many samples failed and exits with code 1 if any did
(:mod:`.failures`).

Every answer comes back as an lmms-eval ``GenerationResult`` whose ``token_counts`` carries the
sample's compression record (see :mod:`.records`): lmms-eval writes it under ``token_counts`` in
the ``--log_samples`` JSONL. Under ``accelerate launch`` each process takes its rank's share of
the requests (lmms-eval shards them by rank) and its own device.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from vtcompress.integrations.lmms_eval import extra_hint

try:
    from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
    from lmms_eval.api.model import lmms
    from lmms_eval.utils import simple_parse_args_string
    from loguru import logger as eval_logger
except ImportError as err:
    raise ImportError(extra_hint()) from err

from transformers import LogitsProcessor, LogitsProcessorList

from vtcompress.api import get_handle
from vtcompress.integrations.inputs import to_rgb
from vtcompress.integrations.lmms_eval.failures import ON_ERROR, TALLY, install_exit_report
from vtcompress.integrations.lmms_eval.records import (
    BatchTiming,
    failed_record,
    image_entry,
    prompt_fields,
    sample_record,
)
from vtcompress.integrations.video_frames import Clip, read_clip


@dataclass
class CompressionTokenCounts(TokenCounts):
    """lmms-eval's per-sample token counts plus the vtcompress record, logged together."""

    vtcompress: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "vtcompress": self.vtcompress}


class _FirstLogitsClock(LogitsProcessor):
    """Notes when the first logits exist, i.e. when prefill (with vision and compression) ended."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.time = device, None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.time is None:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.time = time.perf_counter()
        return scores


def _resolve_dtype(dtype: Any, device: torch.device) -> torch.dtype | str:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return "auto" if device.type == "cuda" else torch.float32
    resolved = getattr(torch, str(dtype), None)
    if not isinstance(resolved, torch.dtype):
        raise ValueError(f"dtype must be auto, float32, float16 or bfloat16; got {dtype!r}")
    return resolved


def _cut_at_stops(text: str, stops: list[str]) -> str:
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text.strip()


class CompressedModel(lmms):
    """What every compressed lmms-eval model shares: devices, batching, records, scoring.

    A subclass loads its model (:meth:`_load`), writes prompts (:meth:`_prompt`), builds model
    inputs (:meth:`_inputs`) and counts an uncompressed image's tokens (:meth:`_uncompressed_images`).
    """

    is_simple = True
    default_method = "globalcom2"
    default_ratio = 0.25
    family = None  # the family's HostSpec: where videos are served (video_inputs), if at all
    max_frames_num: int | None = None

    def __init__(
        self,
        pretrained: str,
        method: str | None = None,
        ratio: float | None = None,
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str | None = "auto",
        attn_implementation: str | None = None,
        max_batch_size: int | None = None,  # lmms-eval passes it; batch sizes here are fixed
        on_error: str = "skip",
        **options: Any,
    ) -> None:
        super().__init__()
        if on_error not in ON_ERROR:
            raise ValueError(
                f"on_error must be skip (record the error, go on) or raise (stop); got {on_error!r}"
            )
        self.on_error = on_error
        install_exit_report()
        from accelerate import Accelerator

        accelerator = Accelerator()
        if device is None or accelerator.num_processes > 1:
            if torch.cuda.is_available():
                device = f"cuda:{accelerator.local_process_index}"
            elif device is None or device.startswith("cuda"):
                device = "cpu"
        self._device = torch.device(device)
        self.accelerator = accelerator
        self._rank, self._world_size = accelerator.process_index, accelerator.num_processes
        self.batch_size_per_device = int(batch_size)
        if self.batch_size_per_device < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.pretrained = str(pretrained)
        method = method or self.default_method
        ratio = float(self.default_ratio if ratio is None else ratio)
        self._model, self.processor = self._load(
            self.pretrained, method, ratio, _resolve_dtype(dtype, self._device), attn_implementation, options
        )
        self.tokenizer = self.processor.tokenizer
        self.handle = get_handle(self._model)
        self.method, self.ratio = self.handle.config.method, self.handle.config.ratio

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict | None = None):
        """Like lmms-eval's, but ``--model_args`` win over the command line's ``--batch_size``
        and ``--device`` instead of clashing with them."""
        args = simple_parse_args_string(arg_string)
        extra = {k: v for k, v in (additional_config or {}).items() if v is not None and k not in args}
        return cls(**args, **extra)

    # --- what a model class provides ---------------------------------------------------------
    def _load(self, pretrained, method, ratio, dtype, attn_implementation, options) -> tuple[Any, Any]:
        """Return (compressed model on self.device, processor); ``options`` are the leftover model_args."""
        raise NotImplementedError

    def _prompt(self, context: str, num_images: int) -> str:
        raise NotImplementedError

    def _inputs(self, prompts: list[str], images: list) -> dict[str, Any]:
        raise NotImplementedError

    def _uncompressed_images(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        """Per image of the batch, its record when nothing is compressed (ratio 1.0)."""
        raise NotImplementedError

    def _text_config(self):
        return self._model.config.text_config

    # --- lmms-eval plumbing -----------------------------------------------------------------
    @property
    def model(self):
        return self._model

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_device

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    def _visuals(self, request: Instance) -> list:
        _, _, doc_to_visual, doc_id, task, split = request.args[:6]
        visuals = doc_to_visual(self.task_dict[task][split][doc_id]) if doc_to_visual else []
        flat = []
        for v in visuals or []:
            flat.extend(v if isinstance(v, (list, tuple)) else [v])
        if any(isinstance(v, (str, os.PathLike)) for v in flat):
            return [self._clip(flat)]
        for v in flat:
            if not hasattr(v, "convert"):
                raise ValueError(f"{self.__class__.__name__} takes images only, got {type(v).__name__}")
        return [to_rgb(v) for v in flat]

    def _clip(self, visuals: list) -> Clip:
        """The one video of a request, its frames sampled uniformly."""
        spec = self.family
        if spec is None or spec.video_inputs is None:
            raise ValueError(f"{self.__class__.__name__} takes images only, got a video path")
        if len(visuals) != 1:
            raise ValueError(f"one video per request is served, got {len(visuals)} visuals")
        return read_clip(visuals[0], self.max_frames_num or spec.video_frames)

    def _video_inputs(self, context: str, clip: Clip) -> dict[str, Any]:
        """The model's inputs for ``context`` about ``clip`` (the family's ``video_inputs``)."""
        build = self.family.load("video_inputs")
        inputs = build(self._model.config, self.processor, clip.frames, context, clip.seconds_between)
        inputs = {k: v.to(self._device) for k, v in inputs.items()}
        inputs["pixel_values_videos"] = inputs["pixel_values_videos"].to(self._model.dtype)
        return inputs

    # --- records ----------------------------------------------------------------------------
    def _records(
        self,
        inputs: dict[str, Any],
        images_per_sample: list[int],
        output_tokens: list[int],
        timing: BatchTiming,
    ) -> list[dict[str, Any]]:
        stats = self.handle.last_stats
        compressed = stats is not None and sum(images_per_sample) > 0
        if stats is None and "pixel_values_videos" in inputs:
            raise RuntimeError(f"{self.method} at ratio {self.ratio} reported no statistics for a video")
        if compressed:
            entries = [image_entry(im) for im in stats.images]
        else:
            entries = self._uncompressed_images(inputs) if sum(images_per_sample) else []
        lengths = inputs["attention_mask"].sum(1).tolist()
        samples = stats.samples if compressed else []
        records, cursor = [], 0
        for b, count in enumerate(images_per_sample):
            sample = samples[b] if b < len(samples) else None
            records.append(
                sample_record(
                    method=self.method,
                    ratio=self.ratio,
                    images=entries[cursor : cursor + count],
                    **prompt_fields(sample, int(lengths[b]), self._text_config()),
                    output_tokens=output_tokens[b],
                    timing=timing,
                )
            )
            cursor += count
        return records

    # --- generation -------------------------------------------------------------------------
    def _generation_kwargs(self, gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        gen = dict(gen_kwargs)
        until = gen.pop("until", None) or []
        until = [until] if isinstance(until, str) else list(until)
        temperature = float(gen.pop("temperature", 0) or 0)
        out: dict[str, Any] = {
            "max_new_tokens": int(gen.pop("max_new_tokens", 128)),
            "num_beams": int(gen.pop("num_beams", 1) or 1),
            "do_sample": temperature > 0,
        }
        if temperature > 0:
            out["temperature"] = temperature
            if gen.get("top_p") is not None:
                out["top_p"] = float(gen["top_p"])
        return out, until

    def _generate_batch(self, requests: list[Instance]) -> list[GenerationResult]:
        visuals = [self._visuals(r) for r in requests]
        clips = [v[0] for v in visuals if v and isinstance(v[0], Clip)]
        if clips and len(requests) > 1:  # a video runs alone
            return [result for r in requests for result in self._generate_batch([r])]
        gen, until = self._generation_kwargs(requests[0].args[1])
        if clips:
            inputs = self._video_inputs(requests[0].args[0], clips[0])
        else:
            prompts = [self._prompt(r.args[0], len(v)) for r, v in zip(requests, visuals)]
            inputs = self._inputs(prompts, [im for v in visuals for im in v])
        clock = _FirstLogitsClock(self._device)
        self.handle.last_stats = None  # set again by this call only if it compresses
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eot_token_id
        start = time.perf_counter()
        with torch.inference_mode():
            out = self._model.generate(
                **inputs, **gen, logits_processor=LogitsProcessorList([clock]), pad_token_id=pad
            )
        if self._device.type == "cuda":
            torch.cuda.synchronize(self._device)
        end = time.perf_counter()
        # Both adapters return the caller's prompt ids followed by the new tokens.
        new_tokens = out[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)
        output_tokens = []
        for row in new_tokens.tolist():
            stop = next((i for i, t in enumerate(row) if t == self.eot_token_id), None)
            output_tokens.append(len(row) if stop is None else stop + 1)
        stats = self.handle.last_stats
        timing = BatchTiming(
            batch_size=len(requests),
            vision_seconds=stats.vision_seconds if stats else 0.0,
            compress_seconds=stats.compress_seconds if stats else 0.0,
            prefill_seconds=(clock.time or end) - start,
            generate_seconds=end - start,
        )
        records = self._records(inputs, [len(v) for v in visuals], output_tokens, timing)
        if clips:
            records[0]["frame_indices"] = clips[0].indices
        results = []
        for text, record in zip(texts, records):
            counts = CompressionTokenCounts(
                input_tokens=record["prompt_tokens_after"],
                output_tokens=record["output_tokens"],
                vtcompress=record,
            )
            results.append(GenerationResult(text=_cut_at_stops(text, until), token_counts=counts))
        return results

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Batches of ``batch_size`` requests with equal generation kwargs, longest prompts first."""
        from tqdm import tqdm

        groups: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            groups.setdefault(json.dumps(r.args[1], sort_keys=True, default=str), []).append(i)
        results: list[GenerationResult | None] = [None] * len(requests)
        bar = tqdm(total=len(requests), disable=self.rank != 0, desc="vtcompress generate")
        for indices in groups.values():
            indices.sort(key=lambda i: -len(requests[i].args[0]))
            for k in range(0, len(indices), self.batch_size):
                chunk = indices[k : k + self.batch_size]
                for i, result in zip(chunk, self._generate_or_record([requests[i] for i in chunk])):
                    results[i] = result
                bar.update(len(chunk))
        bar.close()
        return results

    def _failed(self, request: Instance, error: BaseException) -> dict[str, Any]:
        """Count and log a sample the model could not process; stop the run if on_error=raise."""
        _, _, _, doc_id, task, _ = request.args[:6]
        record = failed_record(method=self.method, ratio=self.ratio, error=error, doc_id=doc_id, task=task)
        if self.on_error == "raise":
            TALLY.stopped = f"task {task!r}, doc {doc_id}: {record['error']}"
            raise error
        TALLY.failed.append(record)
        eval_logger.warning(f"vtcompress: task {task!r} doc {doc_id} failed and scores 0: {record['error']}")
        return record

    def _generate_or_record(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answers of a batch; if it fails, one request at a time, so that only the bad ones fail."""
        TALLY.samples += len(requests)
        try:
            return self._generate_batch(requests)
        except Exception as error:  # noqa: BLE001 - any failure of a sample is recorded, not fatal
            if len(requests) == 1:
                record = self._failed(requests[0], error)
                return [GenerationResult(text="", token_counts=CompressionTokenCounts(vtcompress=record))]
        results = []
        for request in requests:
            try:
                results += self._generate_batch([request])
            except Exception as error:  # noqa: BLE001
                record = self._failed(request, error)
                results.append(
                    GenerationResult(text="", token_counts=CompressionTokenCounts(vtcompress=record))
                )
        return results

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Log-probability of each continuation after the (compressed) prompt, one request a call."""
        results = []
        for request in requests:
            TALLY.samples += 1
            try:
                results.append(self._loglikelihood_one(request))
            except Exception as error:  # noqa: BLE001 - recorded; -inf makes the sample score 0
                self._failed(request, error)
                results.append((float("-inf"), False))
        return results

    def _loglikelihood_one(self, request: Instance) -> tuple[float, bool]:
        context, target, _, doc_id, task, split = request.args[:6]
        continuation = target if isinstance(target, str) else target(self.task_dict[task][split][doc_id])
        images = self._visuals(request)
        if images and isinstance(images[0], Clip):
            inputs, n_cont = self._video_with_continuation(context, images[0], continuation)
        else:
            prompt = self._prompt(context, len(images))
            n_prompt = self._inputs([prompt], images)["input_ids"].shape[1]
            inputs = self._inputs([prompt + continuation], images)
            n_cont = inputs["input_ids"].shape[1] - n_prompt
        if n_cont <= 0:
            raise ValueError(f"continuation {continuation!r} adds no token to the prompt")
        with torch.inference_mode():
            logits = self._model(**inputs).logits[0]
        # Compression shortens image runs only: the continuation stays the last n_cont tokens.
        cont_ids = inputs["input_ids"][0, -n_cont:]
        logprobs = torch.log_softmax(logits[-n_cont - 1 : -1].float(), dim=-1)
        total = logprobs.gather(1, cont_ids[:, None]).sum().item()
        greedy = bool((logprobs.argmax(-1) == cont_ids).all())
        return total, greedy

    def _video_with_continuation(self, context: str, clip: Clip, continuation: str) -> tuple[dict, int]:
        """A video prompt's inputs with ``continuation``'s tokens appended, and their count."""
        inputs = self._video_inputs(context, clip)
        ids = self.tokenizer(continuation, add_special_tokens=False, return_tensors="pt")["input_ids"]
        ids = ids.to(self._device)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], ids], 1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(ids)], 1)
        if "mm_token_type_ids" in inputs:  # text: type 0
            inputs["mm_token_type_ids"] = torch.cat([inputs["mm_token_type_ids"], torch.zeros_like(ids)], 1)
        return inputs, ids.shape[1]

    def generate_until_multi_round(self, requests) -> list[str]:
        raise NotImplementedError(f"{self.__class__.__name__} does not support multi-round generation")


class TransformersModel(CompressedModel):
    """A compressed model of a transformers host: the host's ``load_compressed_*`` loader, an
    optional ``device_map`` and chat template, left padding for batched generation.

    Subclasses set :attr:`default_pretrained` and :meth:`loader`.
    """

    default_pretrained = ""

    def __init__(
        self,
        pretrained: str | None = None,
        device_map: str | None = None,
        chat_template: str | None = None,
        max_frames_num: int | str | None = None,
        **kwargs: Any,
    ) -> None:
        self.device_map, self.chat_template = device_map, chat_template
        if max_frames_num is not None:
            self.max_frames_num = int(max_frames_num)
            if self.max_frames_num < 1:
                raise ValueError(f"max_frames_num must be a positive integer, got {max_frames_num!r}")
        super().__init__(pretrained or self.default_pretrained, **kwargs)

    @staticmethod
    def loader():
        """The host's ``load_compressed_*`` function (imported on use)."""
        raise NotImplementedError

    def _load(self, pretrained, method, ratio, dtype, attn_implementation, options):
        load_kwargs: dict[str, Any] = {"dtype": dtype}
        if attn_implementation:
            load_kwargs["attn_implementation"] = attn_implementation
        if self.device_map:
            load_kwargs["device_map"] = self.device_map
        model, processor = self.loader()(pretrained, method, ratio, options, **load_kwargs)
        if not self.device_map:
            model.to(self._device)
        processor.tokenizer.padding_side = "left"  # batched generation continues after the prompt
        return model, processor

    def _inputs(self, prompts: list[str], images: list) -> dict[str, Any]:
        """The processor's batch for ``prompts`` (images in prompt order), on the model's device
        and, for pixels, in its dtype."""
        inputs = self.processor(images=images or None, text=prompts, padding=True, return_tensors="pt")
        return self._to_model(inputs)

    def _to_model(self, inputs: Any) -> Any:
        inputs = inputs.to(self._device)
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self._model.dtype)
        return inputs

    def _template_prompt(self, context: str, num_images: int, image_token: str) -> str | None:
        """``context`` as one user turn of the chat template (the caller's ``chat_template`` or the
        processor's), with ``num_images`` images before the text unless ``context`` already
        places them (holds ``image_token``); None when there is no template."""
        template = self.chat_template or getattr(self.processor, "chat_template", None)
        if not template:
            return None
        parts = [] if image_token in context else [{"type": "image"}] * num_images
        parts.append({"type": "text", "text": context})
        return self.processor.apply_chat_template(
            [{"role": "user", "content": parts}],
            chat_template=template,
            add_generation_prompt=True,
            tokenize=False,
        )
