"""Load the official mPLUG-DocOwl1.5 checkpoints into the port.

Supported: mPLUG/DocOwl1.5, mPLUG/DocOwl1.5-Chat, mPLUG/DocOwl1.5-Omni, mPLUG/DocOwl1.5-stage1
(``model_type: mplug_docowl``), as a local folder or a hub id (through huggingface_hub), with
weights in one or several ``.bin`` or ``.safetensors`` files (with or without an index).
The port's parameter names equal the official ones; :func:`map_official_key` only drops the
rotary tables that transformers 4.31 stored in every attention layer.
:func:`load_compressed_docowl` loads and compresses in one call.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch

from vtcompress.api import compress, host_config
from vtcompress.config import CompressionConfig
from vtcompress.integrations.docowl import HOST
from vtcompress.integrations.docowl.configuration import DocOwlConfig
from vtcompress.integrations.docowl.modeling import DocOwlForConditionalGeneration
from vtcompress.integrations.docowl.processing import DocOwlImageOptions, DocOwlProcessor
from vtcompress.registry import explicit_options

OFFICIAL_CHECKPOINTS = (
    "mPLUG/DocOwl1.5",
    "mPLUG/DocOwl1.5-Chat",
    "mPLUG/DocOwl1.5-Omni",
    "mPLUG/DocOwl1.5-stage1",
)
DEFAULT_CHECKPOINT = "mPLUG/DocOwl1.5-Chat"
_IGNORED = re.compile(r"(^|\.)rotary_emb\.inv_freq$")
_WEIGHT_PATTERNS = ("*.json", "*.bin", "*.safetensors", "tokenizer.model", "*.txt")


def map_official_key(key: str) -> str | None:
    """Port key for an official key, or None for keys with no counterpart (rotary tables)."""
    if _IGNORED.search(key):
        return None
    return key


def resolve_checkpoint(model_id_or_path: str | os.PathLike, **hub_kwargs: Any) -> Path:
    """A local folder as is; otherwise download the hub repo's config, weights and tokenizer."""
    path = Path(model_id_or_path)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download
    except ImportError as err:  # pragma: no cover - huggingface_hub ships with transformers
        raise ImportError(
            f"{model_id_or_path!r} is not a local folder and huggingface_hub is missing"
        ) from err
    return Path(snapshot_download(str(model_id_or_path), allow_patterns=list(_WEIGHT_PATTERNS), **hub_kwargs))


def weight_files(folder: Path) -> list[Path]:
    """Weight files of a checkpoint folder: from the index when there is one, safetensors first."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = folder / index_name
        if index.is_file():
            names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            return [folder / n for n in names]
    for pattern in ("model*.safetensors", "pytorch_model*.bin"):
        files = sorted(folder.glob(pattern))
        if files:
            return files
    raise FileNotFoundError(f"no *.safetensors or pytorch_model*.bin weights in {folder}")


def iter_official_tensors(files: list[Path]) -> Iterator[tuple[str, torch.Tensor]]:
    """(key, tensor) of every file, one file in memory at a time."""
    for f in files:
        if f.suffix == ".safetensors":
            from safetensors.torch import load_file

            part = load_file(str(f))
        else:
            part = torch.load(f, map_location="cpu", weights_only=True)
        yield from part.items()
        del part


def load_config(folder: Path, **overrides: Any) -> DocOwlConfig:
    data = json.loads((folder / "config.json").read_text())
    if data.get("model_type") != "mplug_docowl":
        raise ValueError(
            f"{folder} holds model_type {data.get('model_type')!r}, not an mPLUG-DocOwl1.5 checkpoint "
            "('mplug_docowl'); DocOwl2 and others are not supported by this port"
        )
    data.update(overrides)
    return DocOwlConfig.from_dict(data)


def load_official_state_dict(
    model: DocOwlForConditionalGeneration,
    tensors: Iterable[tuple[str, torch.Tensor]],
    dtype: torch.dtype | None = None,
) -> None:
    """Load official (key, tensor) pairs into ``model`` (built on the meta device or not).

    Raises ValueError naming the keys on any missing or unexpected key or shape mismatch.
    """
    expected = model.state_dict()
    loaded: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in tensors:
        target = map_official_key(key)
        if target is None:
            continue
        if target not in expected:
            unexpected.append(key)
            continue
        if tuple(tensor.shape) != tuple(expected[target].shape):
            raise ValueError(
                f"{key}: checkpoint shape {tuple(tensor.shape)} != model {tuple(expected[target].shape)}"
            )
        loaded[target] = tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor
    missing = sorted(set(expected) - set(loaded))
    if missing or unexpected:
        raise ValueError(
            f"checkpoint does not match the DocOwl1.5 port: missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}"
        )
    model.load_state_dict(loaded, strict=True, assign=True)


def load_docowl(
    model_id_or_path: str | os.PathLike = DEFAULT_CHECKPOINT,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    attn_implementation: str = "sdpa",
    processor_options: DocOwlImageOptions | None = None,
    **hub_kwargs: Any,
) -> tuple[DocOwlForConditionalGeneration, DocOwlProcessor]:
    """(model, processor) from an official checkpoint (hub id or local folder).

    ``dtype`` defaults to the checkpoint's ``torch_dtype`` (bfloat16/float16 for the released
    ones; use ``torch.float32`` on CPU). The model is in eval mode.
    """
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    folder = resolve_checkpoint(model_id_or_path, **hub_kwargs)
    config = load_config(folder)
    config._attn_implementation = attn_implementation
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    if dtype is None:
        dtype = config.dtype if isinstance(config.dtype, torch.dtype) else torch.float32
    with torch.device("meta"):
        model = DocOwlForConditionalGeneration(config)
    load_official_state_dict(model, iter_official_tensors(weight_files(folder)), dtype=dtype)
    # The rotary tables are non-persistent buffers created on the meta device: rebuild them
    # (in float32, as transformers keeps them).
    model.model.rotary_emb = LlamaRotaryEmbedding(config=config)
    if device is not None:
        model.to(device)
    model.eval()
    options = processor_options
    if options is None and not (folder / "docowl_processor_config.json").is_file():
        options = DocOwlImageOptions(
            image_size=config.vision_spec.image_size, tokens_per_view=config.tokens_per_view
        )
    processor = DocOwlProcessor.from_pretrained(folder)
    if options is not None:
        processor.options = options
    processor.image_token_id = config.image_token_id
    return model, processor


def load_compressed_docowl(
    model: str | os.PathLike = DEFAULT_CHECKPOINT,
    method: str | CompressionConfig = HOST.default_method,
    ratio: float | None = None,
    method_options: dict[str, Any] | None = None,
    **load_kwargs: Any,
) -> tuple[DocOwlForConditionalGeneration, DocOwlProcessor]:
    """Load an official DocOwl1.5 checkpoint (hub id or local folder) into the port and compress it.

    Args:
        model: "mPLUG/DocOwl1.5-Chat" (default), "mPLUG/DocOwl1.5", "-Omni", "-stage1", or a folder.
        method: a name from ``vtcompress.available_methods()`` or a config instance.
        ratio: kept fraction of the 256 H-Reducer tokens per view, in (0, 1]. None (default): the
            config's own ratio (a passed config keeps its ratio; a method name gets its config's
            default, 0.25).
        method_options: other options of the method's config, e.g. ``{"allocation": "exact"}``.
            Options given here or as ``ratio`` win over a passed config's values (applied to a
            copy; the passed config is never changed).
        **load_kwargs: for :func:`load_docowl` (``dtype``, ``device``, ...).
    Returns:
        ``(model, processor)``; ``vtcompress.get_handle(model)`` is the compression handle.
    """
    from vtcompress.integrations.docowl.host import DocOwlHost

    # Fails before loading; a method name gets the host's defaults (metric="projected" for merging).
    config = host_config(DocOwlHost, method, **explicit_options(ratio, method_options))
    docowl, processor = load_docowl(model, **load_kwargs)
    compress(docowl, config)
    return docowl, processor


def register_auto_classes() -> None:
    """Let ``AutoConfig`` / ``AutoModelForCausalLM`` resolve ``model_type: mplug_docowl`` to the port.

    Additive only (no transformers class is replaced); safe to call more than once.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        AutoConfig.register("mplug_docowl", DocOwlConfig, exist_ok=True)
        AutoModelForCausalLM.register(DocOwlConfig, DocOwlForConditionalGeneration, exist_ok=True)
    except TypeError:  # pragma: no cover - older signatures without exist_ok
        pass


# Lets AutoConfig / AutoTokenizer / AutoModelForCausalLM read `model_type: mplug_docowl` (additive).
register_auto_classes()
