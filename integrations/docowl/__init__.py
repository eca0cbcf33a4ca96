"""mPLUG-DocOwl1.5 on current transformers: a native port, its processor, loader and host.

:data:`HOST` declares the family (``vtcompress.hosts`` entry point); importing this package
imports neither transformers nor the port. Importing its loader lets ``AutoConfig`` /
``AutoModelForCausalLM`` read ``model_type: mplug_docowl`` (additive).
"""

from vtcompress.hosts import HostSpec, lazy_export

_PKG = __name__

HOST = HostSpec(
    name="docowl",
    display_name="mPLUG-DocOwl1.5",
    host=f"{_PKG}.host:DocOwlHost",
    model_classes=("DocOwlForConditionalGeneration",),
    model_types=("mplug_docowl",),
    loader=f"{_PKG}.loader:load_compressed_docowl",
    loader_alias="load_compressed_docowl",
    default_method="tokencorr",
    hub_example="mPLUG/DocOwl1.5-Chat",
    tiny_builder=f"{_PKG}.tiny:build_tiny_docowl",
    prompt=f"{_PKG}.prompt:chat_prompt",
    lmms_eval_model="vtcompress_docowl",
    lmms_eval_class=f"{_PKG}.eval_model:CompressedDocOwl",
    # No vision hidden states in the H-Reducer's token order: merging compares the merged tokens.
    # A placeholder run per view needs a token in every view: divprune selects inside each view.
    name_defaults={
        "pitome": {"metric": "projected"},
        "tome": {"metric": "projected"},
        "divprune": {"scope": "view"},
    },
    docs_page="hosts/docowl.md",
)

_EXPORTS = {
    "DocOwlHost": "host",
    "DocOwlLayout": "host",
    "load_compressed_docowl": "loader",
    "DocOwlConfig": "configuration",
    "DocOwlForConditionalGeneration": "modeling",
    "DocOwlImageOptions": "processing",
    "DocOwlModel": "modeling",
    "DocOwlProcessor": "processing",
    "load_docowl": "loader",
    "mplug_owl2_prompt": "processing",
    "register_auto_classes": "loader",
    "select_anchor": "processing",
}


def __getattr__(name: str):
    return lazy_export(__name__, _EXPORTS, name)


__all__ = ["HOST", *_EXPORTS]
