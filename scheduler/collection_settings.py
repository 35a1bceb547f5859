"""``CollectionSettings``: how a collection's images are processed, as a submission gives it.

A submission of an existing collection changes only the settings it was given: the
others keep the values stored on the collection (``given``, :meth:`CollectionSettings.over`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from catalog import OUTPUT_FORMAT_OPTION

if TYPE_CHECKING:
    from catalog import Collection

__all__ = ["SETTING_GROUPS", "CollectionSettings"]

#: The settings a submitter gives together, by the name used in ``given``, and the fields
#: each one sets: ``--size`` also clears the preset, ``--weights`` the untrained flag.
SETTING_GROUPS: Final[Mapping[str, tuple[str, ...]]] = {
    "size": ("preset", "input_size"),
    "model": ("model_name", "checkpoint_sha256", "untrained"),
    "precision": ("precision",),
    "upsample": ("upsample",),
    "output_format": ("output_format",),
    "not_before": ("not_before",),
    "priority": ("priority",),
}


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
        options: Further JSON-serialisable options for the workers. On an existing
            collection, given keys replace the stored ones and the others stay.
        given: The groups of :data:`SETTING_GROUPS` the submitter chose; the others keep
            an existing collection's stored values (a new one takes the values here).
            None means all of them, with ``options`` replacing the stored ones.
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
    given: frozenset[str] | None = None

    def __post_init__(self) -> None:
        unknown = (self.given or frozenset()) - SETTING_GROUPS.keys()
        if unknown:
            raise ValueError(f"unknown settings in given: {', '.join(sorted(unknown))}")

    @classmethod
    def stored(cls, collection: Collection) -> CollectionSettings:
        """Return the settings a collection holds.

        Args:
            collection: The stored collection.

        Returns:
            Its settings, all of them given.
        """
        options = dict(collection.options or {})
        output_format = options.pop(OUTPUT_FORMAT_OPTION, None)
        return cls(
            preset=collection.preset,
            input_size=collection.input_size,
            model_name=collection.model_name,
            checkpoint_sha256=collection.checkpoint_sha256,
            precision=collection.precision,
            upsample=collection.upsample,
            not_before=collection.not_before,
            priority=collection.priority,
            untrained=collection.untrained,
            output_format=None if output_format is None else str(output_format),
            options=options,
        )

    def over(self, stored: CollectionSettings | None) -> CollectionSettings:
        """Return these settings on top of a collection's stored ones.

        Args:
            stored: The existing collection's settings (:meth:`stored`); None for a new
                collection.

        Returns:
            Every setting: the given ones from here, the others from ``stored``.
        """
        if self.given is None or stored is None:
            return dataclasses.replace(self, given=None)
        kept = {
            name: getattr(stored, name)
            for group, names in SETTING_GROUPS.items()
            if group not in self.given
            for name in names
        }
        options = {**stored.options, **self.options}
        return dataclasses.replace(self, **kept, options=options, given=None)

    def collection_options(self) -> dict[str, Any]:
        """Return the options stored on the collection, the output format included.

        Returns:
            A new dict.
        """
        options = dict(self.options)
        if self.output_format is not None:
            options[OUTPUT_FORMAT_OPTION] = self.output_format
        return options
