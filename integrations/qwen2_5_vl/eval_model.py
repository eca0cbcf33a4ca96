"""``vtcompress_qwen2_5_vl``: Qwen2.5-VL (transformers) as an lmms-eval model (see :mod:`.model`)."""

from __future__ import annotations

from vtcompress.integrations.lmms_eval.mrope_model import MRopeModel
from vtcompress.integrations.qwen2_5_vl import HOST


class CompressedQwen2_5_VL(MRopeModel):
    """``vtcompress_qwen2_5_vl``: Qwen2.5-VL (transformers) with vtcompress attached.

    ``pretrained``: a checkpoint (``Qwen/Qwen2.5-VL-7B-Instruct``...), a local folder, or ``tiny``.
    Methods: those the Qwen2.5-VL host serves (docs/hosts/qwen2-5-vl.md), e.g. ``method=tome``
    (its name gets ``metric=projected`` here). Tokens are the merged visual tokens of each image
    (``image_size`` in the records is the processor's resized size).
    """

    default_method, default_ratio = HOST.default_method, 0.25
    family = HOST  # videos: HOST.video_inputs, HOST.video_frames
    default_pretrained = "Qwen/Qwen2.5-VL-7B-Instruct"

    @staticmethod
    def loader():
        from vtcompress.integrations.qwen2_5_vl.loader import load_compressed_qwen2_5_vl

        return load_compressed_qwen2_5_vl

    @staticmethod
    def plain_prompt(question: str, images: int) -> str:
        from vtcompress.integrations.qwen2_5_vl.prompt import prompt

        return prompt(question, images)
