"""vLLM general plugin: registers every declared family's compressed architecture
(``HostSpec.vllm_architecture``) in every vLLM process."""

from __future__ import annotations

from vtcompress.hosts import host_specs


def architectures() -> dict[str, str]:
    """Architecture name -> ``"module:Class"`` of its vLLM model, for every family that has one."""
    return {s.vllm_architecture: s.vllm_model for s in host_specs() if s.vllm_architecture and s.vllm_model}


def register() -> None:
    """Entry point of ``vllm.general_plugins``; the model modules are imported lazily by vLLM."""
    from vllm import ModelRegistry

    from vtcompress.integrations.vllm.mrope_positions import patch_runners

    patch_runners()  # the M-RoPE families recompute positions of kept tokens

    supported = ModelRegistry.get_supported_archs()
    for architecture, model in architectures().items():
        if architecture not in supported:
            ModelRegistry.register_model(architecture, model)
