"""Metadata carried from an original to its colorized copy, and the provenance record.

An archive's scan carries facts that must survive colorization: the ICC profile, the scanning
resolution, EXIF and any XMP the archive wrote (captions, rights, identifiers). The colorized
copy adds one thing: a statement of how it was made. That statement is an XMP packet (the
property names below are standard ones wherever a standard one exists) plus a one-line note for
readers that show only plain text fields.

XMP written here::

    Iptc4xmpExt:DigitalSourceType   compositeWithTrainedAlgorithmicMedia (see the constant);
                                    compositeSynthetic for untrained, random weights
    xmp:ModifyDate, xmp:MetadataDate the time of colorization
    xmpMM:History                   one appended "edited" event naming the software
    panchro:Software, panchro:Model, panchro:CheckpointSHA256, panchro:InputSize,
    panchro:Precision, panchro:Upsample
                                    the exact model run, for reproducibility
    panchro:DerivedFromSHA256       in an access copy only: the SHA-256 of its master
    panchro:Device, panchro:Host    where it ran
    panchro:SourceSHA256            the original's bytes, as read
    panchro:Untrained               "True" when the weights were random
    dc:title, dc:creator...         the original's IPTC-IIM record, for formats without IIM
                                    (see ``iptc_xmp``)

When the original already has an XMP packet, those properties are merged into it, replacing
only the ones listed above (and ``tiff:Orientation``, because decoding applied the rotation).
The stamp itself, its note and the digital source type live in ``storage.stamp``.
"""

from __future__ import annotations

import io
import logging
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from PIL import Image, ImageCms

from storage.iptc_xmp import add_iptc_core
from storage.stamp import DIGITAL_SOURCE_TYPE as DIGITAL_SOURCE_TYPE
from storage.stamp import UNTRAINED_SOURCE_TYPE as UNTRAINED_SOURCE_TYPE
from storage.stamp import ProvenanceStamp as ProvenanceStamp
from storage.stamp import digital_source_type, stamp_facts
from storage.stamp import iso_seconds as _iso
from storage.stamp import provenance_note as provenance_note

if TYPE_CHECKING:
    from storage.codecs.tiff_ifd import Ifd

logger = logging.getLogger(__name__)

#: XML namespace of the panchro-specific XMP properties. It is under the reserved
#: ``.invalid`` domain (RFC 2606), so it can never name someone else's site, and it ends in
#: "/" as XMP namespaces must.
PANCHRO_NS = "http://ns.panchro.invalid/xmp/1.0/"

#: Namespace URIs by the prefixes this module writes.
NAMESPACES = {
    "x": "adobe:ns:meta/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
    "xmp": "http://ns.adobe.com/xap/1.0/",
    "xmpMM": "http://ns.adobe.com/xap/1.0/mm/",
    "stEvt": "http://ns.adobe.com/xap/1.0/sType/ResourceEvent#",
    "tiff": "http://ns.adobe.com/tiff/1.0/",
    "Iptc4xmpExt": "http://iptc.org/std/Iptc4xmpExt/2008-02-29/",
    "panchro": PANCHRO_NS,
}

#: EXIF tag of the orientation (values 1-8; 1 means "stored upright").
EXIF_ORIENTATION = 0x0112

#: Descriptive EXIF/TIFF tags of IFD0 that are worth keeping in a TIFF output (tag ids).
DESCRIPTIVE_TAGS = (
    0x010F,  # Make
    0x0110,  # Model
    0x0131,  # Software of the original
    0x0132,  # DateTime
    0x013B,  # Artist
    0x8298,  # Copyright
)

#: Sub-IFDs (Exif, GPS) carried inside an EXIF block (tag ids).
EXIF_SUB_IFDS = (0x8769, 0x8825)

_XPACKET_BEGIN = '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
_XPACKET_END = '<?xpacket end="w"?>'
_RDF_DESCRIPTION = f"{{{NAMESPACES['rdf']}}}Description"
_RDF_ABOUT = f"{{{NAMESPACES['rdf']}}}about"

for _prefix, _uri in NAMESPACES.items():
    ET.register_namespace(_prefix, _uri)


@dataclass(frozen=True)
class ImageMetadata:
    """Metadata of a decoded original that its colorized copy should carry.

    Attributes:
        icc_profile: The embedded ICC profile, verbatim, or None.
        dpi: Horizontal and vertical resolution in dots per inch, or None when unknown.
        exif: An EXIF block as Pillow writes it (``Exif\\0\\0`` then a TIFF structure), with
            the orientation already applied and reset to 1, or None.
        xmp: The original XMP packet (UTF-8), merged into the output's packet, or None.
        description: The original's text description (TIFF ImageDescription, PNG
            Description), or None.
        compression: TIFF compression in Pillow's names (``tiff_lzw``, ``raw`` ...), or None.
        jpeg_quality: Estimated IJG quality (1-100) of a JPEG original, or None.
        lossless: For WebP, whether the original was lossless; None for other formats.
        iptc: The original's IPTC-IIM record (the datasets, byte for byte), or None.
        extra_pages: A TIFF original's pages after the first, to be carried unchanged.
        pages_note: Why a TIFF original's further pages cannot be carried, or None.
    """

    icc_profile: bytes | None = None
    dpi: tuple[float, float] | None = None
    exif: bytes | None = None
    xmp: bytes | None = None
    description: str | None = None
    compression: str | None = None
    jpeg_quality: int | None = None
    lossless: bool | None = None
    iptc: bytes | None = None
    extra_pages: tuple[Ifd, ...] = ()
    pages_note: str | None = None


def build_xmp(
    provenance: ProvenanceStamp,
    *,
    base: bytes | None = None,
    derived_from: str | None = None,
    iptc: bytes | None = None,
) -> bytes:
    """Build the XMP packet of a colorized copy, merged into the original's packet if any.

    Args:
        provenance: How the copy was made.
        base: The original's XMP packet. Its properties are kept, except those this
            function sets and ``tiff:Orientation``. A packet that cannot be parsed safely
            (malformed, or with a DOCTYPE) is left out, with a warning.
        derived_from: For an access copy: hex SHA-256 of the master it was made from,
            written as ``panchro:DerivedFromSHA256`` (see :func:`derived_from_sha256`).
        iptc: An IIM record whose IPTC Core equivalents are added where the packet lacks
            them (for formats that cannot hold the record itself).

    Returns:
        A complete UTF-8 XMP packet (``<?xpacket ...?>`` wrapper included).
    """
    rdf = _parse_base(base) if base else None
    if rdf is None:
        rdf = ET.Element(_q("rdf", "RDF"))
    history = _take_history(rdf)
    _remove_properties(rdf)
    description = ET.SubElement(rdf, _RDF_DESCRIPTION, {_RDF_ABOUT: ""})
    when = _iso(provenance.created)
    _text(description, "Iptc4xmpExt", "DigitalSourceType", digital_source_type(provenance))
    _text(description, "xmp", "ModifyDate", when)
    _text(description, "xmp", "MetadataDate", when)
    _text(description, "panchro", "Software", provenance.software)
    _text(description, "panchro", "Model", provenance.model_name)
    _text(description, "panchro", "CheckpointSHA256", provenance.checkpoint_sha256)
    _text(description, "panchro", "InputSize", str(provenance.input_size))
    for name, value in stamp_facts(provenance):
        _text(description, "panchro", name, value)
    if derived_from:
        _text(description, "panchro", "DerivedFromSHA256", derived_from)
    history_element = ET.SubElement(description, _q("xmpMM", "History"))
    history_element.append(history)
    event = ET.SubElement(history, _q("rdf", "li"), {_q("rdf", "parseType"): "Resource"})
    _text(event, "stEvt", "action", "edited")
    _text(event, "stEvt", "when", when)
    _text(event, "stEvt", "softwareAgent", provenance.software)
    made = "random colours from" if provenance.untrained else "colorized with"
    _text(
        event,
        "stEvt",
        "parameters",
        f"{made} {provenance.model_name} at input size {provenance.input_size}",
    )
    if iptc:
        add_iptc_core(rdf, iptc)
    return _packet(rdf)


def last_edited_by_panchro(xmp: bytes | None) -> bool:
    """Tell whether an XMP packet says that panchro made the last change to its file.

    That is what :func:`build_xmp` writes: the last ``xmpMM:History`` event names panchro
    as its software agent. A panchro output edited and saved by another program that
    keeps the history (as Adobe's do) no longer qualifies.

    Args:
        xmp: A file's XMP packet, or None.

    Returns:
        True if the last history event's ``stEvt:softwareAgent`` starts with ``panchro``.
    """
    rdf = _parse_base(xmp) if xmp else None
    if rdf is None:
        return False
    events = rdf.findall(f".//{_q('xmpMM', 'History')}/{_q('rdf', 'Seq')}/{_q('rdf', 'li')}")
    if not events:
        return False
    name = _q("stEvt", "softwareAgent")
    agent = events[-1].find(name)
    text = agent.text if agent is not None else events[-1].get(name)
    return (text or "").startswith("panchro")


def derived_from_sha256(xmp: bytes | None) -> str | None:
    """Return the master's SHA-256 that an access copy's XMP names, if it names one.

    Args:
        xmp: A file's XMP packet, or None.

    Returns:
        The ``panchro:DerivedFromSHA256`` value written by :func:`build_xmp`, or None.
    """
    rdf = _parse_base(xmp) if xmp else None
    if rdf is None:
        return None
    element = rdf.find(f"{_RDF_DESCRIPTION}/{_q('panchro', 'DerivedFromSHA256')}")
    if element is None or not element.text:
        return None
    return element.text.strip()


def carry_xmp(base: bytes | None, *, iptc: bytes | None = None) -> bytes | None:
    """Prepare an original's XMP packet for a copy made without a provenance record.

    Args:
        base: The original's XMP packet, or None.
        iptc: An IIM record to mirror as IPTC Core where the packet lacks it, or None.

    Returns:
        The packet without ``tiff:Orientation`` (decoding already turned the pixels
        upright), or None when there is none or it cannot be parsed safely, and no IIM.
    """
    rdf = _parse_base(base) if base else None
    if rdf is None:
        if not iptc:
            return None
        rdf = ET.Element(_q("rdf", "RDF"))
    if iptc:
        add_iptc_core(rdf, iptc)
    for description in rdf.findall(_RDF_DESCRIPTION):
        name = _q("tiff", "Orientation")
        description.attrib.pop(name, None)
        for child in description.findall(name):
            description.remove(child)
    return _packet(rdf)


@cache
def srgb_icc() -> bytes:
    """Return an sRGB ICC profile (LittleCMS's built-in one), for RGB made from other spaces.

    Returns:
        The profile's bytes.
    """
    return bytes(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())


def reset_orientation(exif: Image.Exif) -> bytes | None:
    """Serialise an EXIF block with its orientation reset to 1 ("stored upright").

    Args:
        exif: The EXIF of an image whose pixels have already been turned upright.

    Returns:
        The EXIF block as bytes, or None when it holds no tags.
    """
    if not len(exif):
        return None
    if EXIF_ORIENTATION in exif:
        exif[EXIF_ORIENTATION] = 1
    return exif.tobytes()


def descriptive_exif(tags: Image.Exif) -> bytes | None:
    """Keep only the tags of a TIFF's first IFD that describe the picture, as an EXIF block.

    A TIFF's IFD0 mixes description (Make, Artist, Copyright ...) with layout (strip
    offsets, bits per sample) that is meaningless in another file; only the former is kept,
    with the Exif and GPS sub-IFDs.

    Args:
        tags: ``Image.getexif()`` of a TIFF.

    Returns:
        An EXIF block as bytes, or None when none of those tags is present.
    """
    kept = Image.Exif()
    for tag in DESCRIPTIVE_TAGS:
        value = tags.get(tag)
        if value not in (None, "", b""):
            kept[tag] = value
    for tag in EXIF_SUB_IFDS:
        if tag in tags:
            value = tags.get(tag)
            sub_ifd = value if isinstance(value, dict) else tags.get_ifd(tag)
            if sub_ifd:
                kept[tag] = sub_ifd
    return kept.tobytes() if len(kept) else None


def ifd0_text_tags(exif: bytes | None) -> dict[int, str]:
    """Return the descriptive IFD0 text tags of an EXIF block (for writing into a TIFF).

    Args:
        exif: An EXIF block as produced by this module, or None.

    Returns:
        Tag id to text for the tags in ``DESCRIPTIVE_TAGS`` that hold text.
    """
    if not exif:
        return {}
    parsed = Image.Exif()
    try:
        parsed.load(exif)
    except (SyntaxError, ValueError, OSError, KeyError) as exc:
        logger.warning("ignoring unreadable EXIF block: %s", exc)
        return {}
    return {tag: parsed[tag] for tag in DESCRIPTIVE_TAGS if isinstance(parsed.get(tag), str)}


def _packet(rdf: ET.Element) -> bytes:
    """Wrap an rdf:RDF element in x:xmpmeta and the xpacket processing instructions."""
    root = ET.Element(_q("x", "xmpmeta"))
    root.append(rdf)
    body = ET.tostring(root, encoding="unicode")
    return f"{_XPACKET_BEGIN}\n{body}\n{_XPACKET_END}".encode()


def _q(prefix: str, name: str) -> str:
    return f"{{{NAMESPACES[prefix]}}}{name}"


def _text(parent: ET.Element, prefix: str, name: str, value: str) -> None:
    ET.SubElement(parent, _q(prefix, name)).text = value


#: Properties this module owns; copies of them in the original's packet are removed.
_REPLACED = (
    _q("Iptc4xmpExt", "DigitalSourceType"),
    _q("xmp", "ModifyDate"),
    _q("xmp", "MetadataDate"),
    _q("tiff", "Orientation"),
    _q("xmpMM", "History"),
    _q("panchro", "Software"),
    _q("panchro", "Model"),
    _q("panchro", "CheckpointSHA256"),
    _q("panchro", "InputSize"),
    _q("panchro", "Precision"),
    _q("panchro", "DerivedFromSHA256"),
    _q("panchro", "Upsample"),
    _q("panchro", "Device"),
    _q("panchro", "Host"),
    _q("panchro", "SourceSHA256"),
    _q("panchro", "Untrained"),
)


def _parse_base(packet: bytes) -> ET.Element | None:
    """Return the rdf:RDF element of an original's packet; None (with a warning) if unusable."""
    text = packet.decode("utf-8", errors="replace").lstrip("\ufeff")
    if re.search(r"<!(DOCTYPE|ENTITY)", text):
        # Entity declarations have no place in XMP and are the usual vehicle of XML bombs.
        logger.warning("original XMP has a DOCTYPE or ENTITY declaration; not merged")
        return None
    text = re.sub(r"<\?xpacket[^>]*\?>", "", text).strip()
    try:
        events = ET.iterparse(io.BytesIO(text.encode()), events=("start-ns",))
        for _event, (prefix, uri) in events:
            if prefix and not re.fullmatch(r"ns\d+", prefix) and uri not in NAMESPACES.values():
                ET.register_namespace(prefix, uri)
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        logger.warning("original XMP is not well-formed XML (%s); not merged", exc)
        return None
    rdf = root if root.tag == _q("rdf", "RDF") else root.find(f".//{_q('rdf', 'RDF')}")
    if rdf is None:
        logger.warning("original XMP has no rdf:RDF element; not merged")
    return rdf


def _take_history(rdf: ET.Element) -> ET.Element:
    """Detach the original's xmpMM:History sequence, or make an empty one."""
    for description in rdf.findall(_RDF_DESCRIPTION):
        history = description.find(_q("xmpMM", "History"))
        if history is not None:
            sequence = history.find(_q("rdf", "Seq"))
            if sequence is not None:
                history.remove(sequence)
                return sequence
    return ET.Element(_q("rdf", "Seq"))


def _remove_properties(rdf: ET.Element) -> None:
    """Drop the properties this module sets, in element and in attribute form."""
    for description in rdf.findall(_RDF_DESCRIPTION):
        for name in _REPLACED:
            description.attrib.pop(name, None)
            for child in description.findall(name):
                description.remove(child)
