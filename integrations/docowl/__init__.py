"""mPLUG-DocOwl1.5 on current transformers: a native port, its processor, loader and compression."""

from .compression import DocOwlAdapter, DocOwlLayout, load_compressed_docowl
from .configuration import DocOwlConfig
from .loading import load_docowl, register_auto_classes
from .modeling import DocOwlForConditionalGeneration, DocOwlModel
from .processing import DocOwlImageOptions, DocOwlProcessor, mplug_owl2_prompt, select_anchor

# Lets AutoConfig / AutoTokenizer / AutoModelForCausalLM read `model_type: mplug_docowl` (additive).
register_auto_classes()

__all__ = [
    "DocOwlAdapter",
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
