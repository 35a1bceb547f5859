"""The IIM record of an original, mirrored into XMP as IPTC Core for formats without IIM.

PNG and WebP have no standard place for IIM, only for XMP; the IPTC Photo Metadata
Standard (2023) maps each IIM dataset onto an XMP property, which is what readers of those
formats look for. Properties the original's XMP already has are left as they are (the
original's XMP is the newer statement when both exist, per the Metadata Working Group).

=====================  ================================  ====================
IIM dataset            XMP property                      kind
=====================  ================================  ====================
2:05 ObjectName        dc:title                          language alternative
2:80 By-line           dc:creator                        ordered list
2:120 Caption-Abstract dc:description                    language alternative
2:116 CopyrightNotice  dc:rights                         language alternative
2:25 Keywords          dc:subject                        bag
2:55/2:60 Date/Time    photoshop:DateCreated             date
others                 photoshop:Headline, City, ...     text
=====================  ================================  ====================
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from storage.iptc import iim_text

__all__ = ["IPTC_NAMESPACES", "add_iptc_core"]

#: Namespace URIs of the properties written here, by prefix.
IPTC_NAMESPACES = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "photoshop": "http://ns.adobe.com/photoshop/1.0/",
    "Iptc4xmpCore": "http://iptc.org/std/Iptc4xmpCore/1.0/xmlns/",
}

_RDF = "http://www.w3.org/1999/02/22-rdf-syntax-ns#"
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

#: IIM dataset number (record 2) -> (prefix, property, kind): "alt", "seq", "bag", "text".
IIM_TO_XMP: dict[int, tuple[str, str, str]] = {
    5: ("dc", "title", "alt"),
    80: ("dc", "creator", "seq"),
    120: ("dc", "description", "alt"),
    116: ("dc", "rights", "alt"),
    25: ("dc", "subject", "bag"),
    85: ("photoshop", "AuthorsPosition", "text"),
    105: ("photoshop", "Headline", "text"),
    110: ("photoshop", "Credit", "text"),
    115: ("photoshop", "Source", "text"),
    90: ("photoshop", "City", "text"),
    95: ("photoshop", "State", "text"),
    101: ("photoshop", "Country", "text"),
    40: ("photoshop", "Instructions", "text"),
    103: ("photoshop", "TransmissionReference", "text"),
    122: ("photoshop", "CaptionWriter", "text"),
    15: ("photoshop", "Category", "text"),
    20: ("photoshop", "SupplementalCategories", "bag"),
    10: ("photoshop", "Urgency", "text"),
    92: ("Iptc4xmpCore", "Location", "text"),
    100: ("Iptc4xmpCore", "CountryCode", "text"),
}

#: IIM DateCreated and TimeCreated datasets.
_DATE, _TIME = 55, 60

for _prefix, _uri in IPTC_NAMESPACES.items():
    ET.register_namespace(_prefix, _uri)


def add_iptc_core(rdf: ET.Element, iim: bytes) -> list[str]:
    """Add the IPTC Core equivalents of an IIM record that an XMP tree lacks.

    Args:
        rdf: The packet's ``rdf:RDF`` element; a new ``rdf:Description`` is appended to it
            when anything is added.
        iim: The IIM stream.

    Returns:
        The properties added, as ``prefix:name``.
    """
    texts = iim_text(iim)
    wanted: list[tuple[str, str, str, list[str]]] = []
    for number, (prefix, name, kind) in IIM_TO_XMP.items():
        values = [value for value in texts.get(number, []) if value]
        if values:
            wanted.append((prefix, name, kind, values))
    date = _date_created(texts)
    if date:
        wanted.append(("photoshop", "DateCreated", "text", [date]))
    present = _present(rdf)
    added = []
    description: ET.Element | None = None
    for prefix, name, kind, values in wanted:
        qualified = f"{{{IPTC_NAMESPACES[prefix]}}}{name}"
        if qualified in present:
            continue
        if description is None:
            description = ET.SubElement(rdf, f"{{{_RDF}}}Description", {f"{{{_RDF}}}about": ""})
        _property(description, qualified, kind, values)
        added.append(f"{prefix}:{name}")
    return added


def _present(rdf: ET.Element) -> set[str]:
    """Qualified names of the properties the tree's descriptions hold (either form)."""
    names: set[str] = set()
    for description in rdf.findall(f"{{{_RDF}}}Description"):
        names.update(child.tag for child in description)
        names.update(description.attrib)
    return names


def _property(parent: ET.Element, qualified: str, kind: str, values: list[str]) -> None:
    element = ET.SubElement(parent, qualified)
    if kind == "text":
        element.text = values[0]
        return
    container = ET.SubElement(element, f"{{{_RDF}}}{kind.capitalize()}")
    for value in values[:1] if kind == "alt" else values:
        item = ET.SubElement(container, f"{{{_RDF}}}li")
        if kind == "alt":
            item.set(_XML_LANG, "x-default")
        item.text = value


def _date_created(texts: dict[int, list[str]]) -> str | None:
    """IIM DateCreated (CCYYMMDD) and TimeCreated (HHMMSS+HHMM) as an XMP date."""
    date = (texts.get(_DATE) or [""])[0]
    if len(date) != 8 or not date.isdigit():
        return None
    text = f"{date[:4]}-{date[4:6]}-{date[6:]}"
    time = (texts.get(_TIME) or [""])[0]
    if len(time) >= 6 and time[:6].isdigit():
        text += f"T{time[:2]}:{time[2:4]}:{time[4:6]}"
        zone = time[6:]
        if len(zone) == 5 and zone[0] in "+-" and zone[1:].isdigit():
            text += f"{zone[:3]}:{zone[3:]}"
    return text
