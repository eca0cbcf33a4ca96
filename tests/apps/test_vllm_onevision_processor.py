"""vLLM's processor for the compressed OneVision, without an engine: the profiling inputs vLLM
builds at start-up (on GPUs the encoder is profiled with them) are processed at ratio 1.0, so a
server-wide video method does not refuse the dummy image, and memory is planned for the most a
request can ask for."""

from __future__ import annotations

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: bash .ci/vllm-setup.sh builds .venv-vllm")

from tests.helpers.vllm_onevision import ARCH  # noqa: E402
from vtcompress.integrations.llava_onevision.layout import OneVisionLayout  # noqa: E402
from vtcompress.integrations.vllm.onevision_tiny import save_tiny_onevision_for_vllm  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY
    from vllm.plugins import load_general_plugins

    load_general_plugins()  # vtcompress's plugin registers the architecture, as in every vLLM process

    checkpoint = save_tiny_onevision_for_vllm(tmp_path_factory.mktemp("proc") / "tiny-llava-onevision")
    config = ModelConfig(
        model=str(checkpoint),
        dtype="float32",
        max_model_len=8192,
        limit_mm_per_prompt={"image": 1, "video": 1},
        hf_overrides={"architectures": [ARCH], "vtcompress": {"method": "vidcom2", "ratio": 0.25}},
    )
    return MULTIMODAL_REGISTRY.create_processor(config)


def test_profiling_inputs_run_uncompressed_under_a_video_method(processor):
    assert type(processor).__name__ == "CompressedOnevisionProcessor"
    image = processor.get_dummy_mm_inputs({"image": 1})  # the server's vidcom2 would refuse an image
    width, height = processor.info.get_image_size_with_most_features()
    layout = OneVisionLayout.for_image((height, width))
    (run,) = image["mm_placeholders"]["image"]
    assert run.length == layout.num_tokens() + layout.num_newlines("unpadded")  # ratio 1.0
    video = processor.get_dummy_mm_inputs({"video": 1})
    (clip,) = video["mm_placeholders"]["video"]
    frames = processor.info.get_num_frames_with_most_features(8192, {"video": 1})
    assert clip.length == frames * 14 * 14 + 1  # uncompressed too, though the server compresses
