"""Thumbnails of a done image: a small sRGB JPEG of the original and one of its copy.

Once an image's copy is written, its worker reduces the pixels it already holds (the
decoded original and the colorized array, never a file read again) to a pair of JPEGs
with a :data:`LONG_EDGE` px long edge and writes them under the collection's output; the
transaction that records the image done records their URIs on it too, so that
``panchro report`` shows every image of a collection without reading a master. Layout,
in a hidden folder that no scan ever registers::

    <output>/.panchro/thumbs/<k[:2]>/<k>.source.jpg
    <output>/.panchro/thumbs/<k[:2]>/<k>.output.jpg

where ``k`` is the first 32 hex digits (128 bits) of the SHA-256 of the image's output
URI: one output, one pair, and since two images never share an output, two sources never
share a thumbnail (a collision of 128-bit digests is not a practical event).

Each JPEG carries the comment :data:`MARKER`. A file already at a thumbnail's place is
replaced only if it carries it (a thumbnail panchro wrote, say for an earlier try); any
other file is left untouched. Nothing here fails the image: a thumbnail that cannot be
made or written is logged, and the image is recorded done without one.

Cost: the reduction first takes every n-th pixel down to about :data:`OVERSAMPLE` times
the long edge (reading a fraction of a large scan), then averages whole blocks of pixels
down to about the long edge and filters the rest with Pillow's Lanczos resampling; the
colour conversion to sRGB runs on the small image. A pair costs 9-15 ms per image on one
CPU core, 24 MP RGB scans included (``benchmarks/thumbnails.py``).
"""

from __future__ import annotations

import hashlib
import io
import logging
import time
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np
from PIL import Image, ImageCms

from storage.errors import OutputExists
from storage.uri import join, parse_uri
from workers.errors import ForeignOutput
from workers.outputs import OutputPlan, check_output

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from catalog import Claim
    from storage.base import Storage
    from storage.imaging import DecodedImage
    from workers.readahead import StorageFor

__all__ = [
    "LONG_EDGE",
    "MARKER",
    "THUMBS_FOLDER",
    "ThumbnailJob",
    "Thumbnails",
    "make_thumbnail",
    "thumbnail_uris",
    "write_thumbnail_files",
]

logger = logging.getLogger(__name__)

#: Long edge of a thumbnail, in pixels (never larger than the image).
LONG_EDGE: Final = 256
#: JPEG quality of a thumbnail (1-95).
QUALITY: Final = 80
#: The reduction keeps every n-th pixel down to this many times the long edge, then filters.
OVERSAMPLE: Final = 4
#: Hex digits of the SHA-256 of an output URI that name its thumbnails.
KEY_DIGITS: Final = 32
#: Folder of the thumbnails below a collection's output, ``/``-separated.
THUMBS_FOLDER: Final = ".panchro/thumbs"
#: JPEG comment of every thumbnail panchro writes: what may be replaced.
MARKER: Final = b"panchro thumbnail"
#: Largest file at a thumbnail's place that is read to see whether it is one, in bytes.
MAX_THUMBNAIL_BYTES: Final = 1024 * 1024


def thumbnail_uris(output_root: str, output_uri: str) -> tuple[str, str]:
    """Return where the thumbnails of an image's original and copy go.

    Args:
        output_root: The collection's output location.
        output_uri: The image's output URI.

    Returns:
        The URIs of the original's thumbnail and of the copy's.

    Raises:
        InvalidURI: If ``output_root`` is not a location.
    """
    key = hashlib.sha256(output_uri.encode("utf-8", "surrogateescape")).hexdigest()[:KEY_DIGITS]
    folder = join(parse_uri(output_root), f"{THUMBS_FOLDER}/{key[:2]}")
    return str(folder.join(f"{key}.source.jpg")), str(folder.join(f"{key}.output.jpg"))


@lru_cache(maxsize=16)
def _to_srgb(icc_profile: bytes, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A transform from an embedded profile to sRGB (None if the profile does not fit)."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
        target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        return ImageCms.buildTransform(source, target, mode, "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError) as exc:
        logger.debug("no sRGB transform from the %s image's profile: %s", mode, exc)
        return None


def _reduced(samples: NDArray[Any], long_edge: int) -> Image.Image:
    """HxW or HxWxC uint8/uint16 samples -> a Pillow image of at most ``long_edge`` px."""
    step = max(1, max(samples.shape[:2]) // (long_edge * OVERSAMPLE))
    if step > 1:
        samples = samples[::step, ::step]
    if samples.dtype == np.uint16:
        samples = (samples >> 8).astype(np.uint8)
    image = Image.fromarray(np.ascontiguousarray(samples))
    # Box-reduce by a whole factor to at most twice the long edge, then Lanczos: a third of
    # the time of Lanczos from the full size, for a result no one tells apart at 256 px.
    image.thumbnail((long_edge, long_edge), Image.Resampling.LANCZOS, reducing_gap=1.0)
    return image


def make_thumbnail(
    pixels: NDArray[Any],
    *,
    alpha: NDArray[Any] | None = None,
    icc_profile: bytes | None = None,
    long_edge: int = LONG_EDGE,
) -> bytes:
    """Reduce an image to a small sRGB JPEG.

    Args:
        pixels: HxW (gray) or HxWx3 (RGB) uint8 or uint16 samples.
        alpha: HxW alpha of the same dtype, or None; transparent parts show white.
        icc_profile: The profile the samples are in, or None for sRGB.
        long_edge: Longest side of the thumbnail, in pixels; smaller images keep their size.

    Returns:
        The JPEG file, carrying the :data:`MARKER` comment.

    Raises:
        ValueError: If the samples are not such an image.
    """
    if pixels.dtype not in (np.uint8, np.uint16) or pixels.ndim not in (2, 3):
        raise ValueError(f"expected HxW or HxWx3 uint8/uint16 samples, got {pixels.shape}")
    image = _reduced(pixels, long_edge)
    if icc_profile:
        transform = _to_srgb(icc_profile, image.mode)
        if transform is not None:
            image = ImageCms.applyTransform(image, transform) or image
    if alpha is not None:
        mask = _reduced(alpha, long_edge).resize(image.size)
        white = Image.new(image.mode, image.size, "white")
        image = Image.composite(image, white, mask)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=QUALITY, comment=MARKER)
    return out.getvalue()


def _is_ours(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data)) as found:
            return found.format == "JPEG" and found.info.get("comment") == MARKER
    except (OSError, ValueError, Image.DecompressionBombError):
        return False


def _write(storage: Storage, uri: str, data: bytes) -> None:
    """Write a thumbnail where none is, or over a thumbnail panchro wrote."""
    try:
        storage.write(uri, data, content_type="image/jpeg", overwrite=False)
        return
    except OutputExists:
        pass
    found = storage.read_head(uri, MAX_THUMBNAIL_BYTES)
    if found == data:
        return
    if len(found) >= MAX_THUMBNAIL_BYTES or not _is_ours(found):
        raise ForeignOutput(f"{uri} exists and is not a thumbnail panchro wrote; left untouched")
    digest = hashlib.sha256(found).hexdigest()
    storage.write(uri, data, content_type="image/jpeg", overwrite=False, replaceable=(digest,))


class ThumbnailJob(Protocol):
    """What :func:`write_thumbnail_files` needs of a claimed image (``process_image``'s job)."""

    @property
    def claim(self) -> Claim:
        """The claim: the image's id, source and output URIs."""
        ...

    @property
    def output(self) -> OutputPlan:
        """Where its output went, and the collection's output location."""
        ...


@dataclass(frozen=True)
class Thumbnails:
    """A thumbnail pair written for an image, to record when the image is recorded done.

    Attributes:
        source_uri: Where the original's thumbnail was written.
        output_uri: Where the copy's thumbnail was written.
    """

    source_uri: str
    output_uri: str


def write_thumbnail_files(
    storage_for: StorageFor,
    job: ThumbnailJob,
    original: DecodedImage,
    colorized: NDArray[Any],
    log: logging.LoggerAdapter[logging.Logger] | logging.Logger = logger,
) -> Thumbnails | None:
    """Make and write the thumbnail pair of an image; never raises for a failure.

    Nothing is recorded here: the worker records the pair with the image's done UPDATE
    (``mark_done(thumbnails=...)``), so it costs the catalog no statement of its own.

    Args:
        storage_for: Returns the store of a location.
        job: The claimed image and its output plan.
        original: The decoded original.
        colorized: Its colorized copy: HxWx3, the original's dtype.
        log: Where to log, with the collection and image in every line.

    Returns:
        The pair, or None when it could not be made or written (logged).
    """
    began = time.perf_counter()
    claim, output_root = job.claim, job.output.root
    try:
        source_uri, output_uri = thumbnail_uris(output_root, claim.output_uri)
        for uri in (source_uri, output_uri):
            # Inside the output (no link out of it), never an original.
            check_output(OutputPlan(uri, claim.source_uri, output_root, ()))
        icc = original.metadata.icc_profile
        source_jpeg = make_thumbnail(original.pixels, alpha=original.alpha, icc_profile=icc)
        # The copy carries the original's profile when that is an RGB one, else sRGB's.
        rgb_icc = icc if icc and icc[16:20] == b"RGB " else None
        output_jpeg = make_thumbnail(colorized, alpha=original.alpha, icc_profile=rgb_icc)
        storage = storage_for(source_uri)
        _write(storage, source_uri, source_jpeg)
        _write(storage, output_uri, output_jpeg)
    except Exception as exc:
        # A thumbnail is a by-product for reports: whatever goes wrong with it (the store,
        # a profile Pillow cannot read, a bug) must not fail the image.
        log.warning(
            "no thumbnails (the image is done without them): %s: %s", type(exc).__name__, exc
        )
        return None
    log.debug("thumbnails written in %.3f s", time.perf_counter() - began)
    return Thumbnails(source_uri, output_uri)
