"""Access copies: 8-bit sRGB JPEGs, shrunk never enlarged, flattened, naming their master."""

from __future__ import annotations

import dataclasses
import io
from datetime import UTC, datetime

import numpy as np
import pytest
from PIL import Image, ImageCms

from storage.imaging import access_copy_master, decode_image, encode_access_copies, encode_image
from storage.metadata import ProvenanceStamp, srgb_icc

MASTER = "ab" * 32


def test_a_16_bit_rgba_image_gives_8_bit_srgb_copies_flattened_onto_white() -> None:
    rgb = np.zeros((40, 60, 3), np.uint16)
    rgb[..., 0] = 65535  # red
    alpha = np.zeros((40, 60), np.uint16)
    alpha[:, :30] = 65535  # the left half opaque, the right half transparent
    decoded = decode_image(encode_image(rgb, alpha=alpha))
    assert decoded.alpha is not None and decoded.pixels.dtype == np.uint16

    small, whole = encode_access_copies(
        decoded.pixels, [30, 1000], source=decoded, derived_from=MASTER
    )

    assert (small.width, small.height, small.long_edge) == (30, 20, 30)
    assert (whole.width, whole.height) == (60, 40)  # never enlarged
    with Image.open(io.BytesIO(whole.data)) as copy:
        assert (copy.format, copy.mode, copy.size) == ("JPEG", "RGB", (60, 40))
        profile = ImageCms.ImageCmsProfile(io.BytesIO(copy.info["icc_profile"]))
        assert "sRGB" in ImageCms.getProfileDescription(profile)
        left, right = np.asarray(copy)[20, 5].astype(int), np.asarray(copy)[20, 55].astype(int)
    assert np.abs(left - [255, 0, 0]).max() <= 3
    assert np.abs(right - [255, 255, 255]).max() <= 3
    # Without a provenance stamp there is no XMP to name the master in.
    assert access_copy_master(whole.data) is None


def test_a_copy_names_its_master_and_other_files_name_none() -> None:
    stamp = ProvenanceStamp("panchro 0", "ddcolor_paper", "cd" * 32, 512, datetime.now(UTC))
    gray = np.full((10, 12), 128, np.uint8)
    [copy] = encode_access_copies(gray, [8], provenance=stamp, derived_from=MASTER)

    assert access_copy_master(copy.data[:4096]) == MASTER  # the head is enough
    assert access_copy_master(encode_image(gray)) is None  # a PNG
    assert access_copy_master(b"not an image") is None
    with pytest.raises(ValueError, match="outside 1-65500"):
        encode_access_copies(gray, [0])


def _swapped_primaries() -> bytes:
    """An RGB profile whose red and green primaries are sRGB's green and red."""
    icc = bytearray(srgb_icc())
    count = int.from_bytes(icc[128:132], "big")
    entries = {bytes(icc[132 + 12 * i : 136 + 12 * i]): 132 + 12 * i for i in range(count)}
    red, green = entries[b"rXYZ"], entries[b"gXYZ"]
    icc[red + 4 : red + 12], icc[green + 4 : green + 12] = (
        icc[green + 4 : green + 12],
        icc[red + 4 : red + 12],
    )
    return bytes(icc)


def test_pixels_in_another_rgb_profile_are_converted_to_srgb() -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[..., 0] = 255  # "red" in a space whose red primary is sRGB's green
    tagged = decode_image(encode_image(rgb, source=None))
    source = dataclasses.replace(
        tagged, metadata=dataclasses.replace(tagged.metadata, icc_profile=_swapped_primaries())
    )

    [copy] = encode_access_copies(rgb, [8], source=source)

    with Image.open(io.BytesIO(copy.data)) as image:
        assert image.info["icc_profile"] == srgb_icc()
        red, green, blue = np.asarray(image)[4, 4].astype(int)
    assert green > 200 and red < 60 and blue < 60


def test_a_grainy_image_too_large_for_a_progressive_buffer_is_still_written(
    caplog: pytest.LogCaptureFixture,
) -> None:
    grain = np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)

    with caplog.at_level("INFO", logger="storage.codecs.encode"):
        [copy] = encode_access_copies(grain, [300])

    assert "writing baseline" in caplog.text
    with Image.open(io.BytesIO(copy.data)) as image:
        image.load()
        assert image.size == (300, 300)
