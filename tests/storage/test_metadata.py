"""Tests of the XMP provenance packet and the EXIF helpers in storage.metadata."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

from PIL import Image

from storage.metadata import (
    DIGITAL_SOURCE_TYPE,
    NAMESPACES,
    ProvenanceStamp,
    build_xmp,
    carry_xmp,
    descriptive_exif,
    ifd0_text_tags,
    provenance_note,
    reset_orientation,
)

PROVENANCE = ProvenanceStamp(
    software="panchro 0.1.0",
    model_name="ddcolor_paper",
    checkpoint_sha256="0123456789abcdef" * 4,
    input_size=512,
    created=datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC),
    precision="fp16",
)

ARCHIVE_XMP = b"""<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?>
<x:xmpmeta xmlns:x="adobe:ns:meta/" x:xmptk="Archive Tool 1.0">
 <rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
  <rdf:Description rdf:about=""
    xmlns:dc="http://purl.org/dc/elements/1.1/"
    xmlns:tiff="http://ns.adobe.com/tiff/1.0/"
    xmlns:xmp="http://ns.adobe.com/xap/1.0/"
    xmlns:xmpMM="http://ns.adobe.com/xap/1.0/mm/"
    xmlns:stEvt="http://ns.adobe.com/xap/1.0/sType/ResourceEvent#"
    xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/"
    tiff:Orientation="6"
    xmp:ModifyDate="2001-01-01T00:00:00Z">
   <dc:title><rdf:Alt><rdf:li xml:lang="x-default">Harbour, 1923</rdf:li></rdf:Alt></dc:title>
   <Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/print</Iptc4xmpExt:DigitalSourceType>
   <xmpMM:History><rdf:Seq>
     <rdf:li rdf:parseType="Resource"><stEvt:action>created</stEvt:action></rdf:li>
   </rdf:Seq></xmpMM:History>
  </rdf:Description>
 </rdf:RDF>
</x:xmpmeta>
<?xpacket end="w"?>"""


def _parse(packet: bytes) -> ET.Element:
    text = packet.decode("utf-8")
    assert text.startswith("<?xpacket begin=")
    assert text.rstrip().endswith('<?xpacket end="w"?>')
    body = text[text.index("<x:xmpmeta") : text.index("</x:xmpmeta>") + len("</x:xmpmeta>")]
    return ET.fromstring(body)


def _values(root: ET.Element, prefix: str, name: str) -> list[str]:
    tag = f"{{{NAMESPACES[prefix]}}}{name}"
    found = [element.text or "" for element in root.iter(tag)]
    for element in root.iter(f"{{{NAMESPACES['rdf']}}}Description"):
        if tag in element.attrib:
            found.append(element.attrib[tag])
    return found


def test_build_xmp_records_digital_source_type_and_model_run() -> None:
    root = _parse(build_xmp(PROVENANCE))

    assert _values(root, "Iptc4xmpExt", "DigitalSourceType") == [DIGITAL_SOURCE_TYPE]
    assert DIGITAL_SOURCE_TYPE.endswith("/compositeWithTrainedAlgorithmicMedia")
    assert _values(root, "panchro", "Software") == ["panchro 0.1.0"]
    assert _values(root, "panchro", "Model") == ["ddcolor_paper"]
    assert _values(root, "panchro", "CheckpointSHA256") == ["0123456789abcdef" * 4]
    assert _values(root, "panchro", "InputSize") == ["512"]
    assert _values(root, "panchro", "Precision") == ["fp16"]
    assert _values(root, "xmp", "ModifyDate") == ["2025-03-04T05:06:07+00:00"]
    assert _values(root, "stEvt", "softwareAgent") == ["panchro 0.1.0"]


def test_build_xmp_escapes_markup_in_values() -> None:
    hostile = ProvenanceStamp(
        software='panchro <beta> & "friends"',
        model_name="m</panchro:Model><evil/>",
        checkpoint_sha256="ff" * 32,
        input_size=256,
        created=datetime(2025, 1, 1, tzinfo=UTC),
    )

    root = _parse(build_xmp(hostile))

    assert _values(root, "panchro", "Software") == ['panchro <beta> & "friends"']
    assert _values(root, "panchro", "Model") == ["m</panchro:Model><evil/>"]
    assert not list(root.iter("evil"))


def test_build_xmp_treats_naive_datetime_as_utc() -> None:
    naive = ProvenanceStamp("s", "m", "00" * 32, 512, datetime(2025, 6, 1, 12, 0, 0))
    offset = ProvenanceStamp(
        "s", "m", "00" * 32, 512, datetime(2025, 6, 1, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    )

    assert _values(_parse(build_xmp(naive)), "xmp", "ModifyDate") == ["2025-06-01T12:00:00+00:00"]
    assert _values(_parse(build_xmp(offset)), "xmp", "ModifyDate") == ["2025-06-01T14:00:00+02:00"]


def test_build_xmp_keeps_archive_properties_and_replaces_its_own() -> None:
    root = _parse(build_xmp(PROVENANCE, base=ARCHIVE_XMP))

    titles = [li.text for li in root.iter(f"{{{NAMESPACES['rdf']}}}li") if li.text]
    assert "Harbour, 1923" in titles
    assert _values(root, "Iptc4xmpExt", "DigitalSourceType") == [DIGITAL_SOURCE_TYPE]
    assert _values(root, "xmp", "ModifyDate") == ["2025-03-04T05:06:07+00:00"]
    assert _values(root, "tiff", "Orientation") == []
    assert _values(root, "stEvt", "action") == ["created", "edited"]


def test_build_xmp_leaves_out_a_base_with_entity_declarations() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]>'
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"/>'
    )

    root = _parse(build_xmp(PROVENANCE, base=bomb))

    assert _values(root, "panchro", "Model") == ["ddcolor_paper"]


def test_build_xmp_leaves_out_a_malformed_base() -> None:
    root = _parse(build_xmp(PROVENANCE, base=b"<x:xmpmeta><rdf:RDF>"))

    assert _values(root, "Iptc4xmpExt", "DigitalSourceType") == [DIGITAL_SOURCE_TYPE]


def test_carry_xmp_drops_the_applied_orientation_only() -> None:
    carried = carry_xmp(ARCHIVE_XMP)

    assert carried is not None
    root = _parse(carried)
    assert _values(root, "tiff", "Orientation") == []
    assert _values(root, "xmp", "ModifyDate") == ["2001-01-01T00:00:00Z"]
    assert carry_xmp(None) is None


def test_provenance_note_names_model_size_and_trained_colours() -> None:
    note = provenance_note(PROVENANCE)

    assert "ddcolor_paper" in note
    assert "512 px" in note
    assert "2025-03-04" in note
    assert "trained model" in note
    assert "\n" not in note


def test_reset_orientation_sets_orientation_to_upright() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Scanner Co."

    block = reset_orientation(exif)

    assert block is not None
    parsed = Image.Exif()
    parsed.load(block)
    assert parsed[0x0112] == 1
    assert parsed[0x010F] == "Scanner Co."
    assert reset_orientation(Image.Exif()) is None


def test_descriptive_exif_keeps_description_and_drops_layout_tags() -> None:
    written = Image.Exif()
    written[0x013B] = "A. Photographer"
    written[0x8298] = "Public domain"
    written[0x0111] = 8  # StripOffsets: meaningless in another file
    written[0x8769] = {0x9003: "1923:05:01 10:00:00"}
    tags = Image.Exif()
    tags.load(written.tobytes())

    block = descriptive_exif(tags)

    assert block is not None
    parsed = Image.Exif()
    parsed.load(block)
    assert parsed[0x013B] == "A. Photographer"
    assert 0x0111 not in parsed
    assert parsed.get_ifd(0x8769)[0x9003] == "1923:05:01 10:00:00"
    assert ifd0_text_tags(block) == {0x013B: "A. Photographer", 0x8298: "Public domain"}


def test_ifd0_text_tags_ignores_missing_and_garbage_blocks() -> None:
    assert ifd0_text_tags(None) == {}
    assert ifd0_text_tags(b"Exif\x00\x00garbage") == {}
