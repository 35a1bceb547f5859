"""``CollectionSettings``: how a collection's images are processed, as a submission gives it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from catalog import OUTPUT_FORMAT_OPTION

__all__ = ["CollectionSettings"]


@dataclass(frozen=True)
class CollectionSettings:
    """How a collection's images are processed; stored on the collection.

    Attributes:
        preset: Size preset name ("portrait", "landscape").
        input_size: Model input size in pixels; None means the preset's.
        model_name: Official checkpoint name of the model.
        checkpoint_sha256: SHA-256 of the weights file.
        precision: "auto", "fp16", "bf16" or "fp32".
        upsample: Name of the method that resizes ab to the original size.
        not_before: Local "HH:MM" before which nothing is dispatched (see
            ``scheduler.windows``).
        priority: Dispatch order between collections, higher first.
        untrained: The model runs with random weights (a demonstration).
        output_format: One output format for every image ("png", "tiff"...), or None
            to keep each original's format family. Stored in the collection's options
            under ``OUTPUT_FORMAT_OPTION``.
        options: Further JSON-serialisable options for the workers.
    """

    preset: str | None = None
    input_size: int | None = None
    model_name: str | None = None
    checkpoint_sha256: str | None = None
    precision: str | None = None
    upsample: str | None = None
    not_before: str | None = None
    priority: int = 0
    untrained: bool = False
    output_format: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)

    def collection_options(self) -> dict[str, Any]:
        """Return the options stored on the collection, the output format included.

        Returns:
            A new dict.
        """
        options = dict(self.options)
        if self.output_format is not None:
            options[OUTPUT_FORMAT_OPTION] = self.output_format
        return options
