"""What every tiny offline model shares: toy sizes, the byte-level tokenizer and chat template of
the transformers families, seeded construction, the cache folder, and the marker that says a
saved checkpoint has random weights (the CLI and demo warn about its answers)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

MARKER = "vtcompress.json"

# Toy widths and depth of the tiny decoders and vision towers; each family adds what is its own
# (vocabulary, positions, geometry).
TEXT_SIZES: dict[str, int] = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
)
VISION_SIZES: dict[str, int] = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
)

# The first ids of every byte-level tiny tokenizer (the configs' bos 1 and eos 2 rely on them).
BASE_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]

# A "USER: ... / ASSISTANT: ..." turn opening, as in the llava-hf LLaVA-NeXT chat templates.
USER_ASSISTANT_TURN = "{% if message['role'] == 'user' %}USER: {% else %}ASSISTANT: {% endif %}"


def byte_level_tokenizer(extra_specials: list[str], chat_template: str | None = None):
    """Byte-level tokenizer, fully offline and deterministic: :data:`BASE_SPECIALS`, then
    ``extra_specials`` (the image / video tokens), then the 256 byte symbols, no merges; pads left."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {tok: i for i, tok in enumerate(BASE_SPECIALS + extra_specials + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    # chat_template=None would be saved as "chat_template": null: pass it only when there is one.
    template = {"chat_template": chat_template} if chat_template is not None else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        additional_special_tokens=list(extra_specials),
        padding_side="left",
        **template,
    )


def build_chat_template(
    image_markup: str,
    turn_start: str = USER_ASSISTANT_TURN,
    turn_end: str = "\n",
    generation_prompt: str = "ASSISTANT:",
) -> str:
    """A Jinja chat template: each message is ``turn_start``, its text and image parts (an image
    part as ``image_markup``), then ``turn_end``; ``generation_prompt`` opens the answer."""
    return (
        "{% for message in messages %}" + turn_start + "{% if message['content'] is string %}"
        "{{ message['content'] }}{% else %}{% for part in message['content'] %}"
        "{% if part['type'] == 'image' %}" + image_markup + "{% elif part['type'] == 'text' %}"
        "{{ part['text'] }}{% endif %}{% endfor %}{% endif %}" + turn_end + "{% endfor %}"
        "{% if add_generation_prompt %}" + generation_prompt + "{% endif %}"
    )


def seeded_model(
    model_cls: type,
    config: Any,
    seed: int,
    tokenizer: Any,
    dtype: torch.dtype,
    attn_implementation: str | None = None,
):
    """``model_cls(config)`` with weights drawn from ``seed`` alone (the global RNG is left as it
    was), pad/eos ids from ``tokenizer``, in ``dtype`` and eval mode. ``attn_implementation``,
    when given, is set on ``config`` first."""
    if attn_implementation is not None:
        config._attn_implementation = attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model.to(dtype).eval()


def cache_path(folder: str) -> Path:
    """``folder`` in vtcompress's cache (``VTCOMPRESS_CACHE``, default ``~/.cache/vtcompress``)."""
    root = Path(os.environ.get("VTCOMPRESS_CACHE", Path.home() / ".cache" / "vtcompress"))
    return root / folder


def save_random_tiny(
    path: str | os.PathLike,
    name: str,
    seed: int,
    build: Callable[[int], tuple[Any, Any]],
    save_processor: Callable[[Any, Path], None] | None = None,
) -> Path:
    """``build(seed)``'s model and processor saved to ``path`` and marked random under ``name``.

    ``save_processor(processor, path)`` replaces ``processor.save_pretrained(path)``.
    """
    path = Path(path)
    model, processor = build(seed)
    model.save_pretrained(path)
    if save_processor is None:
        processor.save_pretrained(path)
    else:
        save_processor(processor, path)
    mark_random(path, name, seed)
    return path


def ensure_saved(path: Path, save: Callable[[Path], Any]) -> str:
    """``path`` as a string, after ``save(path)`` unless it already holds a checkpoint
    (``config.json``): a tiny model is built once, on first use, then read from the cache."""
    if not (path / "config.json").exists():
        with progress_bars(False):
            save(path)
    return str(path)


@contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """transformers' progress bars ("Writing model shards", "Loading weights") on or off inside the
    ``with`` block, as they were after it."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    (hf_logging.enable_progress_bar if show and was else hf_logging.disable_progress_bar)()
    try:
        yield
    finally:
        (hf_logging.enable_progress_bar if was else hf_logging.disable_progress_bar)()


def loading_bars(path: str | os.PathLike) -> Any:
    """The progress-bar policy of every loader, the CLI and the demo: a tiny random model loads in
    a moment, so its bars are hidden; a real checkpoint keeps transformers' bars, which show a long
    load progressing (``HF_HUB_DISABLE_PROGRESS_BARS=1`` hides them too)."""
    return progress_bars(not (os.path.isdir(path) and is_random_tiny(path)))


def mark_random(path: Path, name: str, seed: int) -> None:
    """Record in a saved checkpoint that its weights are random."""
    (path / MARKER).write_text(json.dumps({"name": name, "seed": seed, "random_weights": True}))


def is_random_tiny(path: str | os.PathLike) -> bool:
    marker = Path(path) / MARKER
    return marker.exists() and json.loads(marker.read_text()).get("random_weights", False)
