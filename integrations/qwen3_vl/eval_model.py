"""``vtcompress_qwen3_vl``: Qwen3-VL (transformers) as an lmms-eval model (needs the eval extra;
see :mod:`vtcompress.integrations.lmms_eval.model`)."""

from __future__ import annotations

from vtcompress.integrations.lmms_eval.mrope_model import MRopeModel
from vtcompress.integrations.qwen3_vl import HOST


class CompressedQwen3VL(MRopeModel):
    """``vtcompress_qwen3_vl``: Qwen3-VL (transformers) with vtcompress attached.

    ``pretrained``: a checkpoint (``Qwen/Qwen3-VL-8B-Instruct``...), a local folder, or ``tiny``.
    Methods: those the Qwen3-VL host serves (docs/hosts/qwen3-vl.md), e.g. ``method=tome`` (its
    name gets ``metric=projected`` here). Tokens are the merged visual tokens of each image
    (``image_size`` in the records is the processor's resized size). A video (a file path) is
    sampled to ``max_frames_num`` frames and compressed per clip (docs/video.md).
    """

    default_method = HOST.default_method
    family = HOST  # videos: HOST.video_inputs, HOST.video_frames
    default_pretrained = HOST.hub_example

    @staticmethod
    def loader():
        from vtcompress.integrations.qwen3_vl.loader import load_compressed_qwen3_vl

        return load_compressed_qwen3_vl

    @staticmethod
    def plain_prompt(question: str, images: int) -> str:
        from vtcompress.integrations.qwen3_vl.prompt import prompt

        return prompt(question, images)
