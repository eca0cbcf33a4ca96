"""vLLM general plugin: registers the compressed LLaVA-NeXT architecture in every vLLM process."""

from __future__ import annotations

from vtcompress.integrations.vllm import ARCHITECTURE

MODEL_CLASS = "vtcompress.integrations.vllm.model:CompressedLlavaNextForConditionalGeneration"


def register() -> None:
    """Entry point of ``vllm.general_plugins``; the model module is imported lazily by vLLM."""
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, MODEL_CLASS)
