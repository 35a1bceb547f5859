"""The catalog's provenance record of a written copy: how it was made, from what, where.

``process_image`` records it on the image when the copy is written (``catalog.mark_done``);
the copy's own metadata carries the stamp of the same facts (``ColorizedCopy.stamp``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from catalog import Provenance
from workers.weights import describe_weights

if TYPE_CHECKING:
    from ddcolor.pipeline import Colorizer
    from workers.colorizing import ColorizedCopy, Original

__all__ = ["catalog_provenance"]


def catalog_provenance(
    colorizer: Colorizer,
    original: Original,
    colorized: ColorizedCopy,
    *,
    output_sha256: str,
    untrained: bool,
) -> Provenance:
    """Build the provenance of a written copy, to record with ``mark_done``.

    Args:
        colorizer: The model that made it.
        original: The original it was made from.
        colorized: The copy, with the colorization's facts and warnings.
        output_sha256: SHA-256 of the copy as written.
        untrained: Whether the weights were random.

    Returns:
        The record, its text fields cut to their column widths.
    """
    result, decoded = colorized.result, original.decoded
    return Provenance(
        output_sha256=output_sha256,
        output_size=len(colorized.data),
        input_size=result.size,
        precision=result.precision,
        sizes_tried=result.sizes_tried,
        backend=colorizer.runner.label(),
        device=result.device[:128],
        model_name=(colorizer.model_name or "ddcolor")[:64],
        checkpoint_sha256=describe_weights(colorizer, untrained)[1],
        source_sha256=original.sha256,
        width=decoded.width,
        height=decoded.height,
        mode=decoded.mode[:16],
        bit_depth=decoded.bit_depth,
        upsample=result.upsample,
        warnings=colorized.warnings,
    )
