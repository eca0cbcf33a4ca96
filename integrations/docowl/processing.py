"""DocOwl1.5 processor: shape-adaptive cropping, crop indicators, mplug_owl2 prompts, tokenization.

Image side (as the official ``DocProcessor``): pick the crop grid (rows, cols) among the anchors
``grid_9`` (every rows*cols <= 9) by shape-IoU first and IoU second (:func:`select_anchor`);
resize the image bicubically to (rows*448, cols*448) and cut it row-major into 448x448 crops;
optionally put a global view (the whole image resized to 448x448, aspect ratio ignored) first.
Pixels are scaled to [0, 1] and normalised with CLIP's mean/std.

Text side: each ``<|image|>`` of a prompt stands for one image and becomes, per view,
``<global_img><|image|>`` or ``<crop_img_row{r}_col{c}><|image|>`` (plain text indicators), and
each of those ``<|image|>`` becomes ``tokens_per_view`` (257) placeholder ids. Text between
placeholders is tokenized chunk by chunk, as the official ``tokenizer_image_token`` does, with a
single BOS at the start.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

IMAGE_MARKER = "<|image|>"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
PROCESSOR_FILE = "docowl_processor_config.json"

# (rows, cols) in the official order; the order decides ties.
ANCHORS: dict[str, list[tuple[int, int]]] = {
    "grid_1": [(1, 1)],
    "grid_4": [(1, 1), (1, 2), (2, 1), (1, 3), (3, 1), (2, 2), (1, 4), (4, 1)],
    "grid_9": [
        (1, 1),
        (1, 2),
        (2, 1),
        (1, 3),
        (3, 1),
        (2, 2),
        (1, 4),
        (4, 1),
        (1, 5),
        (5, 1),
        (1, 6),
        (6, 1),
        (2, 3),
        (3, 2),
        (1, 7),
        (7, 1),
        (4, 2),
        (2, 4),
        (1, 8),
        (8, 1),
        (3, 3),
        (1, 9),
        (9, 1),
    ],  # fmt: skip
}

MPLUG_OWL2_ROLES = ("USER", "ASSISTANT")


def mplug_owl2_prompt(question: str, with_image: bool = True, history: Sequence[tuple[str, str]] = ()) -> str:
    """The official "mplug_owl2" conversation: no system prompt, ``" "`` and ``"</s>"`` separators.

    ``USER: <|image|>question ASSISTANT:``; earlier turns ``(question, answer)`` come first as
    ``USER: q ASSISTANT: a</s>``.
    """
    user, assistant = MPLUG_OWL2_ROLES
    out = ""
    for i, (q, a) in enumerate(history):
        q = (IMAGE_MARKER + q) if (with_image and i == 0) else q
        out += f"{user}: {q} {assistant}: {a}</s>"
    q = (IMAGE_MARKER + question) if (with_image and not history) else question
    return out + f"{user}: {q} {assistant}:"


def _box_iou(a: Tensor, b: Tensor, eps: float = 1e-5) -> Tensor:
    """IoU of matching xyxy boxes (long [N, 4] each), float32, with the official eps in the union."""
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.maximum(a[:, :2], b[:, :2])
    rb = torch.minimum(a[:, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    return inter / (area_a + area_b - inter + eps)


def select_anchor(
    image_size: tuple[int, int], anchors: Sequence[tuple[int, int]] | str = "grid_9", base: int = 448
) -> tuple[int, int]:
    """Crop grid (rows, cols) for an image of (height, width) pixels.

    Every anchor is a box of (cols*base) x (rows*base) px at the origin. Score =
    ``100 * shape_iou + iou``, where ``iou`` is the anchor's IoU with the image box and
    ``shape_iou`` its IoU with a box of the anchor's width and the image's aspect ratio (height
    truncated to whole pixels, as the official integer boxes do). The first maximum wins, so
    the aspect ratio decides first and the resolution breaks near-ties.
    """
    if isinstance(anchors, str):
        anchors = ANCHORS[anchors]
    h, w = int(image_size[0]), int(image_size[1])
    if h <= 0 or w <= 0:
        raise ValueError(f"image size must be positive, got (height, width) = {(h, w)}")
    boxes = torch.tensor([[0, 0, c * base, r * base] for r, c in anchors], dtype=torch.long)
    image_box = torch.tensor([[0, 0, w, h]], dtype=torch.long).expand_as(boxes)
    same_shape = boxes.clone()
    same_shape[:, 3] = (h / w * boxes[:, 2].double()).long()  # the official code truncates here
    score = _box_iou(boxes, same_shape) * 100 + _box_iou(boxes, image_box)
    return tuple(anchors[int(torch.argmax(score))])


@dataclass
class DocOwlImageOptions:
    """Image-side options (defaults: the official inference setup)."""

    image_size: int = 448
    anchors: str = "grid_9"
    add_global_img: bool = True
    add_textual_crop_indicator: bool = True
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    tokens_per_view: int = 257
    extra: dict[str, Any] = field(default_factory=dict)


def _to_tensor(img: Image.Image, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """PIL RGB -> normalised float32 [3, H, W]."""
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (arr - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def crop_image(image: Image.Image, options: DocOwlImageOptions) -> tuple[Tensor, tuple[int, int]]:
    """One image -> ([V, 3, S, S] views: global first if enabled, crops row-major; (rows, cols))."""
    image = image.convert("RGB")
    s = options.image_size
    rows, cols = select_anchor((image.height, image.width), options.anchors, s)
    views = []
    if options.add_global_img:
        views.append(_to_tensor(image.resize((s, s), Image.BICUBIC), options.image_mean, options.image_std))
    big = _to_tensor(image.resize((cols * s, rows * s), Image.BICUBIC), options.image_mean, options.image_std)
    crops = big.view(3, rows, s, cols, s).permute(1, 3, 0, 2, 4).reshape(rows * cols, 3, s, s)
    return torch.cat([torch.stack(views), crops]) if views else crops, (rows, cols)


def view_indicators(rows: int, cols: int, global_view: bool, textual: bool) -> str:
    """Text that replaces one image's ``<|image|>``: one marker per view, with indicators if ``textual``."""
    parts = []
    if global_view:
        parts.append(("<global_img>" if textual else "") + IMAGE_MARKER)
    for r in range(rows):
        for c in range(cols):
            parts.append((f"<crop_img_row{r}_col{c}>" if textual else "") + IMAGE_MARKER)
    return "".join(parts)


class DocOwlProcessor:
    """Images + prompts -> ``input_ids``, ``attention_mask``, ``modality_indicators``, ``pixel_values``,
    ``image_grids`` for :class:`DocOwlForConditionalGeneration`.

    ``image_grids`` is long [num_images, 3]: (global views (0 or 1), rows, cols) per image, in the
    order the images appear in the prompts; ``image_sizes`` long [num_images, 2] (height, width).
    """

    def __init__(self, tokenizer: Any, options: DocOwlImageOptions | None = None, image_token_id: int = 0):
        self.tokenizer = tokenizer
        self.options = options or DocOwlImageOptions()
        self.image_token_id = image_token_id
        if getattr(tokenizer, "pad_token_id", None) is None:
            # LLaMA tokenizers have no pad token; <unk> is the usual stand-in. Padding is masked.
            tokenizer.pad_token = tokenizer.unk_token

    # --- persistence --------------------------------------------------------------------------
    def save_pretrained(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(path)
        data = {**asdict(self.options), "image_token_id": self.image_token_id}
        (path / PROCESSOR_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, tokenizer: Any = None, **kwargs: Any
    ) -> DocOwlProcessor:
        """Tokenizer from ``path`` (or the one given); options from its processor file, else official defaults."""
        from transformers import AutoTokenizer

        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        data: dict[str, Any] = {}
        cfg = Path(path) / PROCESSOR_FILE
        if cfg.is_file():
            data = json.loads(cfg.read_text())
        image_token_id = int(data.pop("image_token_id", 0))
        known = set(DocOwlImageOptions.__dataclass_fields__)
        opts = DocOwlImageOptions(
            **{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in known}
        )
        return cls(tokenizer, opts, image_token_id)

    # --- text ---------------------------------------------------------------------------------
    def expand_prompt(self, text: str, grids: Sequence[tuple[int, int, int]]) -> str:
        """Replace the i-th ``<|image|>`` by the view markers of image i (grids: (global, rows, cols))."""
        pieces = text.split(IMAGE_MARKER)
        if len(pieces) - 1 != len(grids):
            raise ValueError(f"prompt has {len(pieces) - 1} {IMAGE_MARKER} markers for {len(grids)} images")
        out = pieces[0]
        for (g, r, c), rest in zip(grids, pieces[1:]):
            out += view_indicators(r, c, bool(g), self.options.add_textual_crop_indicator) + rest
        return out

    def tokenize_expanded(self, text: str) -> tuple[list[int], list[int]]:
        """Chunk-wise tokenization: BOS once, ``tokens_per_view`` placeholders per marker.

        Returns (ids, modality) with modality 1 at placeholder positions.
        """
        tok = self.tokenizer
        ids: list[int] = [tok.bos_token_id] if tok.bos_token_id is not None else []
        modality = [0] * len(ids)
        for i, chunk in enumerate(text.split(IMAGE_MARKER)):
            if i:
                ids += [self.image_token_id] * self.options.tokens_per_view
                modality += [1] * self.options.tokens_per_view
            if chunk:
                chunk_ids = tok(chunk, add_special_tokens=False)["input_ids"]
                if self.image_token_id in chunk_ids:
                    raise ValueError(
                        f"the text {chunk!r} tokenizes to the image placeholder id {self.image_token_id}; "
                        "remove that token from the prompt"
                    )
                ids += chunk_ids
                modality += [0] * len(chunk_ids)
        return ids, modality

    def __call__(
        self,
        images: Image.Image | Sequence[Image.Image] | Sequence[Sequence[Image.Image]] | None = None,
        text: str | Sequence[str] | None = None,
        return_tensors: str = "pt",
        **unused: Any,
    ) -> dict[str, Tensor]:
        """Prompts with one ``<|image|>`` per image (e.g. from :func:`mplug_owl2_prompt`).

        ``images``: one image, a flat list (consumed in prompt order), or one list per prompt.
        A prompt without ``<|image|>`` and a single image gets it prepended (``USER: `` stays first
        if present). Batches are left-padded.
        """
        if return_tensors != "pt":
            raise ValueError("only return_tensors='pt' is supported")
        if text is None:
            raise ValueError("text is required (e.g. mplug_owl2_prompt('What is the title?'))")
        texts = [text] if isinstance(text, str) else list(text)
        flat = self._flatten_images(images, len(texts))
        per_text = [t.count(IMAGE_MARKER) for t in texts]
        if sum(per_text) == 0 and len(flat) == len(texts):
            texts = [self._insert_marker(t) for t in texts]
            per_text = [1] * len(texts)
        if sum(per_text) != len(flat):
            raise ValueError(
                f"the prompts hold {sum(per_text)} {IMAGE_MARKER} markers for {len(flat)} images"
            )
        pixel, grids, sizes = [], [], []
        for img in flat:
            sizes.append((img.height, img.width))
            views, (r, c) = crop_image(img, self.options)
            pixel.append(views)
            grids.append((int(self.options.add_global_img), r, c))
        rows, kinds, k = [], [], 0
        for t, n in zip(texts, per_text):
            ids, kind = self.tokenize_expanded(self.expand_prompt(t, grids[k : k + n]))
            rows.append(ids)
            kinds.append(kind)
            k += n
        length = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.full((len(rows), length), pad, dtype=torch.long)
        attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
        modality = torch.zeros(len(rows), length, dtype=torch.long)
        for i, (r, kind) in enumerate(zip(rows, kinds)):
            input_ids[i, length - len(r) :] = torch.tensor(r, dtype=torch.long)
            attention_mask[i, length - len(r) :] = 1
            modality[i, length - len(r) :] = torch.tensor(kind, dtype=torch.long)
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "modality_indicators": modality}
        if pixel:
            out["pixel_values"] = torch.cat(pixel)
            out["image_grids"] = torch.tensor(grids, dtype=torch.long)
            out["image_sizes"] = torch.tensor(sizes, dtype=torch.long)
        return out

    @staticmethod
    def _insert_marker(t: str) -> str:
        user = MPLUG_OWL2_ROLES[0] + ": "
        return user + IMAGE_MARKER + t[len(user) :] if t.startswith(user) else IMAGE_MARKER + t

    @staticmethod
    def _flatten_images(images: Any, n_texts: int) -> list[Image.Image]:
        if images is None:
            return []
        if isinstance(images, Image.Image):
            return [images]
        flat: list[Image.Image] = []
        for item in images:
            if isinstance(item, Image.Image):
                flat.append(item)
            else:
                flat.extend(item)
        for img in flat:
            if not isinstance(img, Image.Image):
                raise TypeError(f"images must be PIL images, got {type(img).__name__}")
        return flat

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> str:
        return self.tokenizer.decode(*args, **kwargs)
