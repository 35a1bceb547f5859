"""What copies carry of their originals, read back by ExifTool: IPTC-IIM, Exif and GPS, XMP.

The originals are tagged by ExifTool itself (an independent writer), colorized copies are
encoded in each format, and ExifTool reads every copy back in one call. Where ExifTool is
not installed (``apt-get install libimage-exiftool-perl``) these tests skip; the
byte-level tests of ``test_tiff_pages.py`` do not need it.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image

from storage.codecs.access import encode_access_copies
from storage.imaging import ProvenanceStamp, decode_image, encode_image

EXIFTOOL = shutil.which("exiftool")
pytestmark = pytest.mark.skipif(
    EXIFTOOL is None,
    reason="ExifTool is not installed (apt-get install libimage-exiftool-perl); it reads "
    "the copies' metadata back",
)

#: What ExifTool writes into the originals.
TAGS = {
    "IPTC:CodedCharacterSet": "UTF8",
    "IPTC:ObjectName": "Ruins of the old mill",
    "IPTC:By-line": "Anna Müller",
    "IPTC:Caption-Abstract": "The mill after the flood, seen from the bridge",
    "IPTC:CopyrightNotice": "Stadtarchiv, CC BY 4.0",
    "IPTC:City": "Passau",
    "EXIF:DateTimeOriginal": "1921:05:04 10:11:12",
    "EXIF:Make": "Zeiss Ikon",
    "GPS:GPSLatitude": "48.5667",
    "GPS:GPSLatitudeRef": "N",
    "GPS:GPSLongitude": "13.4319",
    "GPS:GPSLongitudeRef": "E",
}
KEYWORDS = ["mill", "flood"]

STAMP = ProvenanceStamp(
    software="panchro 0.1.0",
    model_name="ddcolor_paper_tiny",
    checkpoint_sha256="ab" * 32,
    input_size=256,
    created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    precision="fp32",
    upsample="guided",
    device="cpu (test)",
    host="gpu7@archive-node",
)
UNTRAINED = replace(
    STAMP,
    model_name="ddcolor_paper_tiny (UNTRAINED random weights, colours are meaningless)",
    checkpoint_sha256="none (untrained)",
    untrained=True,
)

#: Copies made: (name, original, output format, stamp).
COPIES = [
    ("tif8.tif", "tif8", "tif", STAMP),
    ("tif8.jpg", "tif8", "jpg", STAMP),
    ("tif8.png", "tif8", "png", STAMP),
    ("tif8.webp", "tif8", "webp", STAMP),
    ("tif16.tif", "tif16", "tif", STAMP),
    ("jpeg.jpg", "jpeg", None, STAMP),
    ("jpeg.tif", "jpeg", "tif", STAMP),
    ("png.png", "png", None, STAMP),
    ("png.tif", "png", "tif", STAMP),
    ("untrained.tif", "tif8", "tif", UNTRAINED),
    ("untrained.jpg", "tif8", "jpg", UNTRAINED),
    ("untrained.png", "tif8", "png", UNTRAINED),
]


def _originals(folder: Path) -> dict[str, Path]:
    gray = (np.arange(48 * 64).reshape(48, 64) % 251).astype(np.uint8)
    paths = {
        "tif8": folder / "tif8.tif",
        "tif16": folder / "tif16.tif",
        "jpeg": folder / "j.jpg",
        "png": folder / "p.png",
    }
    tifffile.imwrite(paths["tif8"], gray, compression="zlib", metadata=None)
    wide = np.dstack([gray, gray, gray]).astype(np.uint16) * 257
    # Big-endian: its Exif and GPS sub-IFDs are converted into the little-endian copy.
    tifffile.imwrite(paths["tif16"], wide, photometric="rgb", metadata=None, byteorder=">")
    buffer = io.BytesIO()
    Image.fromarray(gray).save(buffer, "JPEG", quality=90)
    paths["jpeg"].write_bytes(buffer.getvalue())
    Image.fromarray(gray).save(paths["png"])  # ExifTool adds a "Raw profile type iptc"
    arguments = [f"-{tag}={value}" for tag, value in TAGS.items()]
    arguments += [f"-IPTC:Keywords={keyword}" for keyword in KEYWORDS]
    assert EXIFTOOL is not None
    subprocess.run(
        [EXIFTOOL, "-q", "-q", "-overwrite_original", *arguments, *map(str, paths.values())],
        check=True,
        timeout=60,
    )
    return paths


@pytest.fixture(scope="module")
def read_back(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """ExifTool's reading of every copy (``-G1``: tags named by their group), by copy name."""
    folder = tmp_path_factory.mktemp("carry")
    originals = {key: path.read_bytes() for key, path in _originals(folder).items()}
    decoded = {key: decode_image(data, name=key) for key, data in originals.items()}
    written = []
    for name, key, fmt, stamp in COPIES:
        image = decoded[key]
        colour = np.dstack([image.pixels] * 3) if image.pixels.ndim == 2 else image.pixels
        sha = hashlib.sha256(originals[key]).hexdigest()
        data = encode_image(
            colour, source=image, format=fmt, provenance=replace(stamp, source_sha256=sha)
        )
        (folder / name).write_bytes(data)
        written.append(str(folder / name))
    image = decoded["tif8"]
    [access] = encode_access_copies(np.dstack([image.pixels] * 3), [32], source=image)
    (folder / "access.jpg").write_bytes(access.data)
    written.append(str(folder / "access.jpg"))
    assert EXIFTOOL is not None
    result = subprocess.run(
        [EXIFTOOL, "-j", "-G1", "-a", "-n", "-struct", *written],
        capture_output=True,
        check=True,
        text=True,
        timeout=60,
    )
    readings = {Path(item["SourceFile"]).name: item for item in json.loads(result.stdout)}
    readings["sha256"] = {k: hashlib.sha256(v).hexdigest() for k, v in originals.items()}
    return readings


def _values(reading: dict[str, Any], name: str) -> list[Any]:
    """Every value of a tag name, whatever its group."""
    found = [value for key, value in reading.items() if key.split(":")[-1] == name]
    return [v for value in found for v in (value if isinstance(value, list) else [value])]


@pytest.mark.parametrize(
    "copy", ["tif8.tif", "tif16.tif", "tif8.jpg", "jpeg.jpg", "jpeg.tif", "png.tif", "access.jpg"]
)
def test_tiff_and_jpeg_copies_carry_the_whole_iim_record(
    read_back: dict[str, dict[str, Any]], copy: str
) -> None:
    reading = read_back[copy]
    for tag in ("ObjectName", "By-line", "Caption-Abstract", "CopyrightNotice", "City"):
        assert reading[f"IPTC:{tag}"] == TAGS[f"IPTC:{tag}"], tag
    assert reading["IPTC:Keywords"] == KEYWORDS


@pytest.mark.parametrize("copy", ["tif8.png", "tif8.webp", "png.png"])
def test_png_and_webp_copies_mirror_the_iim_record_in_xmp(
    read_back: dict[str, dict[str, Any]], copy: str
) -> None:
    reading = read_back[copy]
    assert reading["XMP-dc:Title"] == TAGS["IPTC:ObjectName"]
    assert reading["XMP-dc:Creator"] == [TAGS["IPTC:By-line"]]
    assert reading["XMP-dc:Description"] == TAGS["IPTC:Caption-Abstract"]
    assert reading["XMP-dc:Rights"] == TAGS["IPTC:CopyrightNotice"]
    assert reading["XMP-dc:Subject"] == KEYWORDS
    assert reading["XMP-photoshop:City"] == TAGS["IPTC:City"]


@pytest.mark.parametrize(
    "copy",
    [
        "tif8.tif",
        "tif16.tif",
        "tif8.jpg",
        "tif8.png",
        "jpeg.jpg",
        "jpeg.tif",
        "png.tif",
        "access.jpg",
    ],
)
def test_copies_carry_exif_date_taken_and_gps(
    read_back: dict[str, dict[str, Any]], copy: str
) -> None:
    reading = read_back[copy]
    assert reading["ExifIFD:DateTimeOriginal"] == TAGS["EXIF:DateTimeOriginal"]
    assert reading["GPS:GPSLatitude"] == pytest.approx(48.5667)
    assert reading["GPS:GPSLongitudeRef"] == "E"
    assert _values(reading, "Make") == [TAGS["EXIF:Make"]]


@pytest.mark.parametrize("copy", ["tif8.tif", "tif16.tif", "tif8.jpg", "tif8.png", "jpeg.tif"])
def test_xmp_records_device_host_upsampling_and_source_checksum(
    read_back: dict[str, dict[str, Any]], copy: str
) -> None:
    reading = read_back[copy]
    original = copy.split(".")[0]
    assert reading["XMP-panchro:Device"] == "cpu (test)"
    assert reading["XMP-panchro:Host"] == "gpu7@archive-node"
    assert reading["XMP-panchro:Upsample"] == "guided"
    assert reading["XMP-panchro:SourceSHA256"] == read_back["sha256"][original]
    assert reading["XMP-iptcExt:DigitalSourceType"].endswith("compositeWithTrainedAlgorithmicMedia")


@pytest.mark.parametrize("copy", ["untrained.tif", "untrained.jpg", "untrained.png"])
def test_untrained_copies_never_claim_a_trained_model(
    read_back: dict[str, dict[str, Any]], copy: str
) -> None:
    reading = read_back[copy]
    text = json.dumps(reading, ensure_ascii=False)
    assert not re.search(r"(?<!un)trained", text, re.IGNORECASE), text
    assert reading["XMP-iptcExt:DigitalSourceType"].endswith("/compositeSynthetic")
    assert reading["XMP-panchro:Untrained"] is True or reading["XMP-panchro:Untrained"] == "True"
    described = reading.get("IFD0:ImageDescription") or reading.get("PNG:Description") or ""
    described += reading.get("File:Comment", "")
    assert "random weights" in described and "Colorized by" not in described
