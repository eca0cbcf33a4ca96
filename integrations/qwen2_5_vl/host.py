"""Qwen2.5-VL (transformers 5.x) host: removable patches around the stock model.

Everything but the names is :class:`~vtcompress.integrations.mrope_host.MRopeHost` (how a call
is encoded, compressed and cut, and how kept tokens keep their 3-D rotary positions). The
tower's ``pooler_output`` is in raster order (the merger's output after the tower's window order
is undone), the order of the placeholders and of the positions (docs/hosts/qwen2-5-vl.md).
"""

from __future__ import annotations

from vtcompress.config import CompressionConfig
from vtcompress.integrations.mrope_host import MRopeHost
from vtcompress.integrations.qwen2_5_vl import HOST
from vtcompress.integrations.qwen2_5_vl.layout import Qwen2_5_VLLayout

MODEL_CLASSES = HOST.model_classes


class Qwen2_5_VLHost(MRopeHost):
    family = HOST.display_name
    docs_page = f"docs/{HOST.docs_page}"
    model_names = "Qwen2_5_VLForConditionalGeneration"
    model_classes = MODEL_CLASSES
    layout = Qwen2_5_VLLayout
    name_defaults = HOST.name_defaults


def check_served(config: CompressionConfig, num_layers: int = 32) -> None:
    """Raise ValueError when this host cannot serve ``config``, naming what is missing and what
    it serves (``num_layers``: the vision tower's depth, 32 in the published checkpoints)."""
    Qwen2_5_VLHost.check_served(config, num_layers)
