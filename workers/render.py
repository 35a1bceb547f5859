"""Turn the bytes of one original into the bytes of its colorized copy.

Shared by the catalog-driven worker (``process_image``) and the stand-alone
``panchro colorize``: decode and validate, colorize (with the out-of-memory size ladder
inside ``ddcolor``), encode in the original's format family with a provenance record.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from storage.imaging import decode_image, encode_image, output_extension
from storage.metadata import Provenance

if TYPE_CHECKING:
    from ddcolor.pipeline import Colorizer, ColorizeResult
    from storage.imaging import DecodedImage

#: Appended to the model name in the metadata of every output made with random weights.
UNTRAINED_NOTE = "UNTRAINED random weights, colours are meaningless"
#: Recorded instead of a checkpoint hash when the weights are random.
UNTRAINED_CHECKPOINT = "none (untrained)"


def software_name() -> str:
    """Name and version of this software, as written into outputs (``panchro 0.1.0``).

    Returns:
        The name and the installed version.
    """
    try:
        return f"panchro {version('panchro')}"
    except PackageNotFoundError:
        return "panchro"


@dataclass(frozen=True)
class Rendered:
    """A colorized copy, encoded, with what went into it.

    Attributes:
        data: The encoded output file.
        extension: File name extension of ``data`` (``.tif``, ``.jpg``, ``.png``, ``.webp``).
        decoded: The decoded original (mode, bit depth, metadata, notes).
        result: The colorization (size used, sizes tried, precision, device, timings).
        provenance: The record written into the output's metadata.
    """

    data: bytes
    extension: str
    decoded: DecodedImage
    result: ColorizeResult
    provenance: Provenance


def describe_weights(colorizer: Colorizer, untrained: bool) -> tuple[str, str]:
    """Model name and checkpoint hash as recorded in outputs and the catalog.

    Args:
        colorizer: The loaded model.
        untrained: Whether its weights are random.

    Returns:
        ``(model name, checkpoint sha256)``; both say so loudly for random weights.
    """
    name = colorizer.model_name or "ddcolor"
    if untrained or colorizer.checkpoint is None:
        return f"{name} ({UNTRAINED_NOTE})", UNTRAINED_CHECKPOINT
    return name, colorizer.checkpoint.sha256


def render(
    colorizer: Colorizer,
    data: bytes,
    *,
    name: str = "",
    size: int | None = None,
    upsample: str | None = None,
    precision: str | None = None,
    output_format: str | None = None,
    untrained: bool = False,
    decoded: DecodedImage | None = None,
) -> Rendered:
    """Colorize the bytes of one original.

    Args:
        colorizer: The loaded model.
        data: The original file's bytes (never modified).
        name: The original's name or URI, for error messages.
        size: Square input size in pixels; None for the colorizer's default.
        upsample: How colour is brought to full resolution (``guided``, ``nearest``...);
            None for the colorizer's default.
        precision: Precision by name (``auto``, ``fp16``...); None for the colorizer's default.
        output_format: Output format instead of the original's family (``png``, ``tif``...).
        untrained: Whether the weights are random (marked in the metadata).
        decoded: The already decoded ``data``, when a read-ahead decoded it.

    Returns:
        The encoded copy and its provenance.

    Raises:
        InvalidImage: If the bytes are not an image that can be colorized.
        OutOfMemoryAtMinimumSize: If the device runs out of memory at every size.
        DDColorError: For other model failures.
        ValueError: If the output format cannot hold the image (alpha in JPEG), or the
            upsampling method is unknown.
    """
    image = decoded if decoded is not None else decode_image(data, name=name)
    result = colorizer.colorize(image.pixels, size=size, upsample=upsample, precision=precision)
    model, checkpoint = describe_weights(colorizer, untrained)
    provenance = Provenance(
        software=software_name(),
        model=model,
        checkpoint_sha256=checkpoint,
        input_size=result.size,
        created=datetime.now(UTC),
        precision=result.precision,
    )
    encoded = encode_image(result.image, source=image, format=output_format, provenance=provenance)
    return Rendered(
        data=encoded,
        extension=output_extension(image.format, output_format),
        decoded=image,
        result=result,
        provenance=provenance,
    )
