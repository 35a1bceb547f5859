"""Tests of the metadata storage.imaging writes into colorized copies.

The ICC profile, resolution and EXIF of the original are carried over, and a provenance
record (XMP and a plain text note) says the colours come from a trained model.
"""

from __future__ import annotations

import io
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from imaging_samples import decode_saved as _decoded
from imaging_samples import noise as _noise
from imaging_samples import pillow_bytes as _pillow
from imaging_samples import tifffile_bytes as _tifffile
from PIL import Image, ImageCms, TiffImagePlugin

from storage.codecs.png import write_png
from storage.imaging import (
    DIGITAL_SOURCE_TYPE,
    DecodedImage,
    ProvenanceStamp,
    decode_image,
    encode_image,
)
from storage.metadata import srgb_icc

PROVENANCE = ProvenanceStamp(
    software="panchro 0.1.0",
    model_name="ddcolor_paper",
    checkpoint_sha256="ab" * 32,
    input_size=512,
    created=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
)


def _xmp_source_types(packet: bytes) -> list[str]:
    text = packet.decode("utf-8")
    body = text[text.index("<x:xmpmeta") : text.index("</x:xmpmeta>") + 12]
    tag = "{http://iptc.org/std/Iptc4xmpExt/2008-02-29/}DigitalSourceType"
    return [element.text or "" for element in ET.fromstring(body).iter(tag)]


WRITERS = [
    ("JPEG", np.uint8, {}),
    ("PNG", np.uint8, {}),
    ("PNG", np.uint16, {}),
    ("TIFF", np.uint8, {"compression": "tiff_lzw"}),
    ("TIFF", np.uint16, {"compression": "zlib"}),
    ("WEBP", np.uint8, {"lossless": True}),
]


def _source_with_metadata(fmt: str, dtype: type, options: dict[str, Any]) -> DecodedImage:
    icc = srgb_icc()
    exif = Image.Exif()
    exif[0x013B] = "A. Photographer"
    exif[0x8298] = "Public domain"
    picture = _noise((12, 10, 3), dtype)
    if dtype == np.uint16:
        if fmt == "TIFF":
            data = _tifffile(
                picture,
                photometric="rgb",
                iccprofile=icc,
                resolution=(300, 300),
                resolutionunit="inch",
                extratags=[
                    (315, "s", 0, "A. Photographer", True),
                    (33432, "s", 0, "Public domain", True),
                ],
                **options,
            )
        else:
            data = write_png(picture, icc_profile=icc, dpi=(300, 300), exif=exif.tobytes())
        return decode_image(data)
    return decode_image(
        _pillow(
            Image.fromarray(picture),
            fmt,
            icc_profile=icc,
            dpi=(300, 300),
            exif=exif.tobytes(),
            **options,
        )
    )


@pytest.mark.parametrize(("fmt", "dtype", "options"), WRITERS)
def test_encode_carries_icc_dpi_exif_and_writes_provenance_xmp(
    fmt: str, dtype: type, options: dict[str, Any]
) -> None:
    source = _source_with_metadata(fmt, dtype, options)

    data = encode_image(_noise((12, 10, 3), dtype), source=source, provenance=PROVENANCE)

    out = decode_image(data)
    assert out.format == fmt
    assert out.pixels.dtype == (dtype if fmt in ("PNG", "TIFF") else np.uint8)
    assert out.metadata.icc_profile == srgb_icc()
    if fmt != "WEBP":  # WebP has no resolution field
        assert out.metadata.dpi == pytest.approx((300.0, 300.0), abs=0.01)
    assert out.metadata.exif is not None
    assert b"A. Photographer" in out.metadata.exif
    assert out.metadata.xmp is not None
    assert _xmp_source_types(out.metadata.xmp) == [DIGITAL_SOURCE_TYPE]


@pytest.mark.parametrize(("fmt", "dtype", "options"), [w for w in WRITERS if w[0] != "WEBP"])
def test_encode_writes_a_plain_text_provenance_note(
    fmt: str, dtype: type, options: dict[str, Any]
) -> None:
    # WebP has no plain text field; its XMP carries the record (tested above).
    source = _source_with_metadata(fmt, dtype, options)

    data = encode_image(_noise((12, 10, 3), dtype), source=source, provenance=PROVENANCE)

    with Image.open(io.BytesIO(data)) as image:
        if fmt == "JPEG":
            note = image.info["comment"].decode()
        elif fmt == "PNG":
            note = image.info["Description"]
            assert image.info["Software"] == "panchro 0.1.0"
        else:
            assert isinstance(image, TiffImagePlugin.TiffImageFile)
            note = image.tag_v2[270]
            assert image.tag_v2[305] == "panchro 0.1.0"
    assert "ddcolor_paper" in note
    assert "trained model" in note


def test_encode_replaces_a_gray_profile_with_srgb_for_colour() -> None:
    gray_icc = bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    gray_icc = gray_icc[:16] + b"GRAY" + gray_icc[20:]
    source = _decoded("PNG", _noise((6, 6), np.uint8), icc_profile=gray_icc)
    assert source.metadata.icc_profile == gray_icc

    colour = decode_image(encode_image(_noise((6, 6, 3), np.uint8), source=source))
    gray = decode_image(encode_image(_noise((6, 6), np.uint8), source=source))

    assert colour.metadata.icc_profile == srgb_icc()
    assert gray.metadata.icc_profile == gray_icc


def test_encode_without_provenance_keeps_the_original_xmp() -> None:
    packet = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/'
        b'elements/1.1/" dc:format="image/png"/></rdf:RDF></x:xmpmeta>'
    )
    source = decode_image(
        write_png(_noise((4, 4), np.uint8), text={"XML:com.adobe.xmp": packet.decode()})
    )

    out = decode_image(encode_image(_noise((4, 4, 3), np.uint8), source=source))

    assert out.metadata.xmp is not None
    assert b'dc:format="image/png"' in out.metadata.xmp
    assert _xmp_source_types(out.metadata.xmp) == []


def test_encode_jpeg_leaves_out_an_original_xmp_too_large_for_one_segment() -> None:
    huge = (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        '22-rdf-syntax-ns#"><rdf:Description rdf:about="" xmlns:dc="http://purl.org/dc/'
        f'elements/1.1/" dc:source="{"x" * 70_000}"/></rdf:RDF></x:xmpmeta>'
    )
    source = decode_image(write_png(_noise((4, 4), np.uint8), text={"XML:com.adobe.xmp": huge}))

    png = decode_image(encode_image(_noise((4, 4, 3), np.uint8), source=source))
    out = decode_image(encode_image(_noise((4, 4, 3), np.uint8), source=source, format="jpg"))
    with_record = decode_image(
        encode_image(
            _noise((4, 4, 3), np.uint8), source=source, format="jpg", provenance=PROVENANCE
        )
    )

    assert png.metadata.xmp is not None and len(png.metadata.xmp) > 70_000
    assert out.metadata.xmp is None
    assert with_record.metadata.xmp is not None
    assert len(with_record.metadata.xmp) < 65_504
    assert _xmp_source_types(with_record.metadata.xmp) == [DIGITAL_SOURCE_TYPE]
