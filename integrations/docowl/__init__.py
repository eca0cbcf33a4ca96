"""mPLUG-DocOwl1.5 on current transformers: a native port, its processor, loader and compression."""

from vtcompress.integrations.docowl.configuration import DocOwlConfig
from vtcompress.integrations.docowl.host import DocOwlHost, DocOwlLayout
from vtcompress.integrations.docowl.loader import load_compressed_docowl, load_docowl, register_auto_classes
from vtcompress.integrations.docowl.modeling import DocOwlForConditionalGeneration, DocOwlModel
from vtcompress.integrations.docowl.processing import (
    DocOwlImageOptions,
    DocOwlProcessor,
    mplug_owl2_prompt,
    select_anchor,
)

# Lets AutoConfig / AutoTokenizer / AutoModelForCausalLM read `model_type: mplug_docowl` (additive).
register_auto_classes()

__all__ = [
    "DocOwlHost",
    "DocOwlLayout",
    "load_compressed_docowl",
    "DocOwlConfig",
    "DocOwlForConditionalGeneration",
    "DocOwlImageOptions",
    "DocOwlModel",
    "DocOwlProcessor",
    "load_docowl",
    "mplug_owl2_prompt",
    "register_auto_classes",
    "select_anchor",
]
