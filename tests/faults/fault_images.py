"""The small collection each fault runs through: good scans and a few corrupt files.

Good images are small grayscale PNGs and JPEGs (48-96 px; the model sees every one at
the collection's input size anyway, so their own size only costs encoding time). Corrupt
ones have an image's name and leading bytes, so the scan registers them, but no decoder
can read them: each must end ``failed`` with a reason.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image as PILImage

#: Good images of the collection of one fault test.
GOOD_IMAGES = 36
#: Corrupt images of that collection.
CORRUPT_IMAGES = 4


@dataclass(frozen=True)
class SourceFile:
    """One original uploaded below a collection's source prefix.

    Attributes:
        relative: Its key below the prefix.
        data: Its bytes.
        good: Whether it must be colorized (else it must fail).
    """

    relative: str
    data: bytes
    good: bool

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of its bytes."""
        return hashlib.sha256(self.data).hexdigest()


def _picture(width: int, height: int, seed: int) -> np.ndarray:
    """An HxW uint8 grey picture: a soft pattern with grain, different for each seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    picture = 0.5 + 0.35 * np.sin(x / (3.0 + seed % 5)) * np.cos(y / (4.0 + seed % 3))
    picture += rng.normal(0.0, 0.04, size=(height, width))
    grey: np.ndarray = (np.clip(picture, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    return grey


def _encode(pixels: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(pixels, mode="L").save(buffer, format=fmt)
    return buffer.getvalue()


def good_file(index: int) -> SourceFile:
    """The good image number ``index``: a PNG for even numbers, a JPEG for odd ones.

    Args:
        index: Its number; it also seeds the picture and picks its size.

    Returns:
        The file, in one of ten folders so that the output tree has some depth.
    """
    width, height = 48 + (index * 13) % 49, 48 + (index * 29) % 49
    fmt, suffix = ("PNG", "png") if index % 2 == 0 else ("JPEG", "jpg")
    data = _encode(_picture(width, height, index), fmt)
    return SourceFile(f"box{index % 10}/scan{index:04d}.{suffix}", data, good=True)


def corrupt_files(count: int = CORRUPT_IMAGES) -> list[SourceFile]:
    """Files that look like images by name and first bytes but cannot be decoded.

    Args:
        count: How many; they cycle through truncated JPEGs, truncated PNGs and noise.

    Returns:
        The files, in their own folder.
    """
    whole_jpeg = _encode(_picture(64, 64, 901), "JPEG")
    whole_png = _encode(_picture(64, 64, 902), "PNG")
    noise = np.random.default_rng(903).integers(0, 256, size=2048, dtype=np.uint8).tobytes()
    kinds = [
        ("jpg", whole_jpeg[: len(whole_jpeg) // 3]),
        ("png", whole_png[: len(whole_png) // 2]),
        ("png", b"\x89PNG\r\n\x1a\n" + noise),
        ("jpg", b"\xff\xd8\xff" + noise),
    ]
    files = []
    for index in range(count):
        suffix, data = kinds[index % len(kinds)]
        files.append(SourceFile(f"broken/bad{index:02d}.{suffix}", data, good=False))
    return files


def collection_files(good: int = GOOD_IMAGES, corrupt: int = CORRUPT_IMAGES) -> list[SourceFile]:
    """The originals of one collection: ``good`` good images and ``corrupt`` corrupt ones.

    Args:
        good: Good images.
        corrupt: Corrupt images.

    Returns:
        The files, good ones first.
    """
    return [good_file(index) for index in range(good)] + corrupt_files(corrupt)
