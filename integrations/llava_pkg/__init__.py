"""Models of the original LLaVA codebase (PyPI ``llava-torch``, import ``llava``): host, layout,
tiny offline checkpoint. Importing this package imports nothing from ``llava`` or transformers.

:data:`HOST` declares the family (``vtcompress.hosts`` entry point).
"""

from vtcompress.hosts import HostSpec

HOST = HostSpec(
    name="llava_pkg",
    display_name="LLaVA (llava package)",
    host=f"{__name__}.host:LlavaPackageHost",
    model_classes=("LlavaLlamaForCausalLM", "LlavaMistralForCausalLM"),
    default_method="globalcom2",
    hub_example="liuhaotian/llava-v1.6-vicuna-7b",
    lmms_eval_model="vtcompress_llava",
    lmms_eval_class=f"{__name__}.eval_model:CompressedLlava",
    docs_page="hosts/llava-package.md",
)
