"""What the M-RoPE hosts' tests share: the positions the language model receives, and the
uncompressed positions of the tokens a compression kept (from the model's own ``get_rope_index``
and the stats' kept cells, independent of the host's cutting code)."""

from __future__ import annotations

import torch


class LanguageModelCalls:
    """The position ids (and the other keyword arguments) the language model receives, call by call."""

    def __init__(self, model):
        self.calls: list[torch.Tensor] = []
        self.kwargs: list[dict] = []
        self.handle = model.model.language_model.register_forward_pre_hook(self.grab, with_kwargs=True)

    def grab(self, module, args, kwargs):
        self.calls.append(kwargs["position_ids"].clone())
        self.kwargs.append(dict(kwargs))

    def close(self):
        self.handle.remove()


def kept_token_mask(model, call, stats) -> torch.Tensor:
    """bool [B, L]: the real tokens of the uncompressed prompt that stay (text, and each image's
    kept placeholders by the (row, col) the stats report)."""
    image_id = model.config.image_token_id
    merge = model.config.vision_config.spatial_merge_size
    # (index, token-grid width) of each image in batch order, from the processor's grid
    images = iter(enumerate(int(w) // merge for w in call["image_grid_thw"][:, 2]))
    masks = []
    for b in range(call["input_ids"].shape[0]):
        ids = call["input_ids"][b]
        keep = call["attention_mask"][b].bool() & (ids != image_id)
        placeholders = (ids == image_id).nonzero().flatten().tolist()
        while placeholders:
            index, cols = next(images)
            image = stats.images[index]
            run, placeholders = placeholders[: image.tokens_before], placeholders[image.tokens_before :]
            for row, col in image.views[0].positions:
                keep[run[row * cols + col]] = True
        masks.append(keep)
    return torch.stack(masks)


def expected_positions(model, call, stats) -> list[torch.Tensor]:
    """Per sample, long [3, n]: the uncompressed positions of the tokens that stay, in order."""
    positions, _ = model.model.get_rope_index(
        call["input_ids"],
        call["mm_token_type_ids"],
        image_grid_thw=call["image_grid_thw"],
        attention_mask=call["attention_mask"],
    )
    keep = kept_token_mask(model, call, stats)
    return [positions[:, b, keep[b]] for b in range(keep.shape[0])]


def real_columns(positions: torch.Tensor, b: int, n: int) -> torch.Tensor:
    """The last ``n`` columns of sample ``b`` (left padding: the real tokens)."""
    return positions[-3:, b, positions.shape[-1] - n :]
