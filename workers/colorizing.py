"""Colorizing one original: read and decode it, colorize it, encode the copy.

The steps every way of colorizing shares: the catalog-driven workers (``process_image``,
under Celery or embedded in ``panchro run``), the read-ahead that decodes originals before
their turn, and the stand-alone ``panchro colorize``::

    original = read_original(storage, uri)          # the one place an original is decoded
    copy = colorize_original(colorizer, original, size=512, output_format="png")
    storage.write(output_uri, copy.data)

Colorizing runs the out-of-memory size ladder inside ``ddcolor``; the copy is encoded in
the original's format family with a provenance stamp in its metadata.
"""

from __future__ import annotations

import hashlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING

from storage.imaging import decode_image, encode_image, output_extension
from storage.metadata import ProvenanceStamp
from workers.source_checks import source_warnings
from workers.weights import UNTRAINED_CHECKPOINT, describe_weights

if TYPE_CHECKING:
    from ddcolor.pipeline import Colorizer, ColorizeResult
    from storage.base import Storage
    from storage.imaging import DecodedImage

__all__ = [
    "ColorizedCopy",
    "Original",
    "colorize_original",
    "encode_copy",
    "read_original",
    "software_name",
]


def software_name() -> str:
    """Name and version of this software, as written into outputs (``panchro 0.1.0``).

    Returns:
        The name and the installed version.
    """
    try:
        return f"panchro {version('panchro')}"
    except PackageNotFoundError:
        return "panchro"


@dataclass(frozen=True, eq=False)
class Original:
    """An original, read and decoded.

    Attributes:
        uri: Where it was read from.
        data: The file's bytes (never modified).
        sha256: Hex SHA-256 of ``data``.
        decoded: The decoded image (pixels, mode, bit depth, metadata).
        seconds: Time spent reading and decoding, in seconds.
    """

    uri: str
    data: bytes
    sha256: str
    decoded: DecodedImage
    seconds: float


def read_original(
    storage: Storage, uri: str, *, on_decode: Callable[[], object] | None = None
) -> Original:
    """Read an original and decode it: validated, upright, at its own bit depth.

    Args:
        storage: The store that holds it.
        uri: Its location.
        on_decode: Called once the bytes are read, before decoding starts (a worker
            names the phase a failure happened in).

    Returns:
        The original.

    Raises:
        StorageError: If it cannot be read (``ObjectNotFound``, ``StorageUnavailable``...).
        InvalidImage: If the bytes are not an image that can be colorized.
    """
    began = time.perf_counter()
    data = storage.read(uri)
    if on_decode is not None:
        on_decode()
    decoded = decode_image(data, name=uri)
    sha256 = hashlib.sha256(data).hexdigest()
    return Original(uri, data, sha256, decoded, time.perf_counter() - began)


@dataclass(frozen=True)
class ColorizedCopy:
    """A colorized copy, encoded, with what went into it.

    Attributes:
        data: The encoded output file.
        extension: File name extension of ``data`` (``.tif``, ``.jpg``, ``.png``, ``.webp``).
        result: The colorization (size used, sizes tried, precision, device, timings).
        stamp: The provenance written into the copy's metadata.
        warnings: What a person should know, as ``{"code", "message"}`` dicts
            (``workers.source_checks``): an original already in colour, pages left out.
    """

    data: bytes
    extension: str
    result: ColorizeResult
    stamp: ProvenanceStamp
    warnings: tuple[dict[str, str], ...] = ()


def colorize_original(
    colorizer: Colorizer,
    original: Original,
    *,
    size: int | None = None,
    upsample: str | None = None,
    precision: str | None = None,
    output_format: str | None = None,
    untrained: bool = False,
    host: str | None = None,
) -> ColorizedCopy:
    """Colorize one original and encode the copy.

    Args:
        colorizer: The loaded model.
        original: The original, read and decoded (:func:`read_original`).
        size: Square input size in pixels; None for the colorizer's default.
        upsample: How colour is brought to full resolution (``guided``, ``nearest``...);
            None for the colorizer's default.
        precision: Precision by name (``auto``, ``fp16``...); None for the colorizer's default.
        output_format: Output format instead of the original's family (``png``, ``tif``...).
        untrained: Whether the weights are random (marked in the metadata).
        host: The worker or machine, as stamped into the copy; None for this host's name.

    Returns:
        The encoded copy and its provenance.

    Raises:
        OutOfMemoryAtMinimumSize: If the device runs out of memory at every size.
        DDColorError: For other model failures.
        ValueError: If the output format cannot hold the image (alpha in JPEG), or the
            upsampling method is unknown.
    """
    result = colorizer.colorize(
        original.decoded.pixels, size=size, upsample=upsample, precision=precision
    )
    return encode_copy(
        colorizer, original, result, output_format=output_format, untrained=untrained, host=host
    )


def encode_copy(
    colorizer: Colorizer,
    original: Original,
    result: ColorizeResult,
    *,
    output_format: str | None = None,
    untrained: bool = False,
    host: str | None = None,
) -> ColorizedCopy:
    """Encode a colorization of an original, with its provenance stamp.

    The second half of :func:`colorize_original`, for a colorization made otherwise (in a
    batch, :func:`ddcolor.batching.colorize_batch`).

    Args:
        colorizer: The model that made it.
        original: The original it was made from.
        result: The colorization of ``original.decoded.pixels``.
        output_format: Output format instead of the original's family (``png``, ``tif``...).
        untrained: Whether the weights are random (marked in the metadata).
        host: The worker or machine, as stamped into the copy; None for this host's name.

    Returns:
        The encoded copy and its provenance.

    Raises:
        ValueError: If the output format cannot hold the image (alpha in JPEG).
    """
    image = original.decoded
    model_name, checkpoint = describe_weights(colorizer, untrained)
    stamp = ProvenanceStamp(
        software=software_name(),
        model_name=model_name,
        checkpoint_sha256=checkpoint,
        input_size=result.size,
        created=datetime.now(UTC),
        precision=result.precision,
        upsample=result.upsample,
        device=result.device,
        host=host or socket.gethostname(),
        source_sha256=original.sha256,
        untrained=checkpoint == UNTRAINED_CHECKPOINT,
    )
    encoded = encode_image(result.image, source=image, format=output_format, provenance=stamp)
    extension = output_extension(image.format, output_format)
    return ColorizedCopy(
        data=encoded,
        extension=extension,
        result=result,
        stamp=stamp,
        warnings=source_warnings(image, encoded, extension),
    )
