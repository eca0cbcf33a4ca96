"""Serve compressed LLaVA-NeXT with vLLM: a ``vllm.general_plugins`` plugin (see docs/serving-vllm.md).

``plugin.register`` registers :data:`ARCHITECTURE`; ``model`` (which imports vLLM) holds the model
class and its multimodal processor; ``settings`` (no vLLM) the configuration and the count rule.
"""

ARCHITECTURE = "VtcompressLlavaNextForConditionalGeneration"  # its family's HostSpec.vllm_architecture
