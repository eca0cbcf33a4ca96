"""What the lmms-eval models of the M-RoPE hosts share (see
:mod:`vtcompress.integrations.mrope_host`): prompts with the family's image markup, and the
uncompressed token counts of each image from the processor's ``image_grid_thw``."""

from __future__ import annotations

from typing import Any

from vtcompress.integrations.lmms_eval.model import TransformersModel


class MRopeModel(TransformersModel):
    """Subclasses set :attr:`default_pretrained`, :meth:`loader` and :meth:`plain_prompt`.

    Tokens are the merged visual tokens of each image (``image_size`` in the records is the
    processor's resized size).
    """

    default_method, default_ratio = "uniform", 0.25

    @staticmethod
    def plain_prompt(question: str, images: int) -> str:
        """The family's prompt for ``images`` images followed by ``question``, where the processor
        has no chat template (the tiny models)."""
        raise NotImplementedError

    def _prompt(self, context: str, num_images: int) -> str:
        image_token = getattr(self.processor, "image_token", "<|image_pad|>")
        templated = self._template_prompt(context, num_images, image_token)
        if templated is not None:
            return templated
        return self.plain_prompt(context, 0 if image_token in context else num_images)

    def _uncompressed_images(self, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        from vtcompress.integrations.lmms_eval.records import uncompressed_image_entry
        from vtcompress.integrations.mrope_host import MergedGridLayout

        merge = self._model.config.vision_config.spatial_merge_size
        px = self._model.config.vision_config.patch_size * merge
        entries = []
        for thw in inputs["image_grid_thw"].tolist():
            layout = MergedGridLayout.from_grid_thw(thw, merge)
            size = (layout.grid[0] * px, layout.grid[1] * px)
            entries.append(
                uncompressed_image_entry(size, (layout.rows, layout.cols), layout.view_counts(), 0)
            )
        return entries
