"""TIFF structure at the byte level: directories read from one file, appended to another.

Pillow and tifffile write the first page of a colorized copy; what neither can write is
added afterwards by ``tiff_carry``, with the two pieces here:

* :func:`read_ifd` reads an image file directory (IFD) as a tree: its entries, the data
  blocks its strip, tile or JPEG offsets point to, and the IFDs its SubIFDs, Exif, GPS and
  Interoperability entries point to. Blocks are views of the original's bytes, not copies.
* :class:`TiffBuilder` appends such trees to a classic TIFF file, rewriting every offset,
  and rewrites the file's first IFD at the end of the file with added entries (the header
  then points at the new one; the old one stays behind, unreferenced, a few hundred bytes).

A tree read in the other byte order has its entries converted value by value (by TIFF field
type; byte streams such as XMP and IPTC stay as they are). Its image data cannot be: a page
with samples wider than 8 bits is refused in the other byte order. Classic TIFF only (32-bit
offsets, TIFF 6.0); a BigTIFF original is refused with a clear reason. Offsets inside a
MakerNote, which some cameras write relative to the file, are not rewritten.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "LONG",
    "UNDEFINED",
    "Entry",
    "Ifd",
    "TiffBuilder",
    "count_pages",
    "integers",
    "read_header",
    "read_ifd",
]

#: Bytes per value of each TIFF field type (TIFF 6.0 section 2; 13 is IFD, Adobe note 1).
TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4}
#: Field type LONG (unsigned 32-bit).
LONG = 4
#: Field type UNDEFINED (bytes).
UNDEFINED = 7
#: Bytes swapped together between byte orders, per field type (a rational is two longs).
_SWAP_UNITS = {3: 2, 4: 4, 5: 4, 8: 2, 9: 4, 10: 4, 11: 4, 12: 8, 13: 4}
#: struct codes of the integer field types.
_INTEGER_CODES = {1: "B", 3: "H", 4: "I", 6: "b", 8: "h", 9: "i", 13: "I"}
#: Tags whose values are a byte stream whatever type they declare (XMP, IPTC, Photoshop,
#: ICC); never byte-swapped.
BYTE_STREAM_TAGS = frozenset({700, 33723, 34377, 34675})
#: Tags that point to data blocks, with the tag that holds the blocks' sizes in bytes:
#: StripOffsets, TileOffsets, JPEGInterchangeFormat.
BLOCK_TAGS = {273: 279, 324: 325, 513: 514}
#: Tags that point to further IFDs: SubIFDs, Exif, GPS, Interoperability.
IFD_TAGS = frozenset({330, 34665, 34853, 40965})
#: Tags left out of copied IFDs: free-space lists point into the old file.
DROPPED_TAGS = frozenset({288, 289})
#: BitsPerSample tag.
TAG_BITS_PER_SAMPLE = 258
#: Most entries accepted in one IFD; real files have a few dozen.
MAX_ENTRIES = 4096
#: Deepest nesting of IFDs followed (page -> Exif -> Interoperability is 2).
MAX_DEPTH = 4
#: Largest offset of a classic TIFF (bytes).
MAX_OFFSET = 2**32 - 1


@dataclass(frozen=True)
class Entry:
    """One IFD entry with its values.

    Attributes:
        tag: Tag id.
        type: Field type (1 BYTE ... 13 IFD).
        count: Number of values.
        value: The values' bytes, in the byte order of the IFD they were read from.
    """

    tag: int
    type: int
    count: int
    value: bytes


@dataclass(frozen=True, eq=False)
class Ifd:
    """An IFD as a tree that can be written into another file.

    Attributes:
        byteorder: ``"<"`` (II) or ``">"`` (MM): the order of ``entries``' values.
        entries: The entries, except those in ``blocks``' and ``children``' keys.
        blocks: Data blocks by the tag that points to them (views of the source's bytes).
        children: IFDs by the tag that points to them.
    """

    byteorder: str
    entries: tuple[Entry, ...]
    blocks: Mapping[int, tuple[memoryview, ...]] = field(default_factory=dict)
    children: Mapping[int, tuple[Ifd, ...]] = field(default_factory=dict)

    def entry(self, tag: int) -> Entry | None:
        """Return the entry of a tag, or None."""
        return next((entry for entry in self.entries if entry.tag == tag), None)

    @property
    def wide_samples(self) -> bool:
        """Whether some sample is wider than 8 bits (its bytes depend on the byte order)."""
        bits = self.entry(TAG_BITS_PER_SAMPLE)
        return bits is not None and max(integers(bits, self.byteorder), default=1) > 8

    @property
    def size(self) -> int:
        """Bytes of data this tree holds, blocks and children included (roughly)."""
        own = sum(len(entry.value) + 12 for entry in self.entries)
        own += sum(len(block) for blocks in self.blocks.values() for block in blocks)
        return own + sum(child.size for kids in self.children.values() for child in kids)


def read_header(data: bytes | memoryview) -> tuple[str, int]:
    """Read a classic TIFF header.

    Args:
        data: The file, from its first byte.

    Returns:
        The byte order (``"<"`` or ``">"``) and the offset of the first IFD.

    Raises:
        ValueError: If it is not a classic TIFF (BigTIFF included).
    """
    if len(data) < 8 or bytes(data[:2]) not in (b"II", b"MM"):
        raise ValueError("not a TIFF structure")
    order = "<" if bytes(data[:2]) == b"II" else ">"
    magic, offset = struct.unpack(f"{order}HI", data[2:8])
    if magic == 43:
        raise ValueError("a BigTIFF (64-bit offsets), which cannot be carried")
    if magic != 42:
        raise ValueError("not a TIFF structure")
    return order, int(offset)


def integers(entry: Entry, byteorder: str) -> tuple[int, ...]:
    """Return an entry's values as integers (empty for non-integer types).

    Args:
        entry: The entry.
        byteorder: The byte order of its values.

    Returns:
        The values.
    """
    code = _INTEGER_CODES.get(entry.type)
    if code is None:
        return ()
    return tuple(struct.unpack(f"{byteorder}{entry.count}{code}", entry.value))


def read_ifd(
    data: bytes | memoryview, offset: int, byteorder: str, *, depth: int = 0
) -> tuple[Ifd, int]:
    """Read the IFD at an offset as a tree, with its blocks and sub-IFDs.

    Args:
        data: The whole file.
        offset: Where the IFD starts.
        byteorder: The file's byte order.
        depth: Nesting level (sub-IFDs deeper than ``MAX_DEPTH`` are left out).

    Returns:
        The tree and the offset of the next IFD in the chain (0 at the end).

    Raises:
        ValueError: If the IFD or something it points to lies outside the file.
    """
    view = memoryview(data)
    raw, next_offset = _raw_entries(view, offset, byteorder)
    entries: list[Entry] = []
    for tag, kind, count, field_bytes in raw:
        size = TYPE_SIZES.get(kind)
        if size is None or tag in DROPPED_TAGS:
            continue  # an unknown type cannot be sized, so it cannot be copied
        length = size * count
        if length <= 4:
            value = bytes(field_bytes[:length])
        else:
            (start,) = struct.unpack(f"{byteorder}I", field_bytes)
            value = bytes(_span(view, start, length))
        entries.append(Entry(tag, kind, count, value))
    blocks: dict[int, tuple[memoryview, ...]] = {}
    children: dict[int, tuple[Ifd, ...]] = {}
    by_tag = {entry.tag: entry for entry in entries}
    for tag, sizes_tag in BLOCK_TAGS.items():
        if tag in by_tag and sizes_tag in by_tag:
            starts = integers(by_tag[tag], byteorder)
            sizes = integers(by_tag[sizes_tag], byteorder)
            if len(starts) != len(sizes):
                raise ValueError(f"tag {tag} has {len(starts)} offsets but {len(sizes)} sizes")
            blocks[tag] = tuple(_span(view, s, n) for s, n in zip(starts, sizes, strict=True))
    for tag in IFD_TAGS & by_tag.keys():
        if depth < MAX_DEPTH:
            starts = integers(by_tag[tag], byteorder)
            children[tag] = tuple(
                read_ifd(view, start, byteorder, depth=depth + 1)[0] for start in starts
            )
    kept = tuple(e for e in entries if e.tag not in blocks and e.tag not in children)
    return Ifd(byteorder, kept, blocks, children), next_offset


def count_pages(data: bytes) -> int:
    """Count the IFDs in a TIFF's main chain (its pages).

    Args:
        data: The whole file.

    Returns:
        The number of pages; 1 when the structure cannot be walked.
    """
    try:
        byteorder, offset = read_header(data)
        seen: set[int] = set()
        while offset and offset not in seen:
            seen.add(offset)
            offset = _raw_entries(data, offset, byteorder)[1]
    except (ValueError, struct.error):
        return 1
    return max(len(seen), 1)


class TiffBuilder:
    """Appends IFD trees to a classic TIFF file and rewrites its first IFD.

    Args:
        data: The TIFF file to extend (not modified; the result is :meth:`getvalue`).

    Raises:
        ValueError: If ``data`` is not a classic TIFF.
    """

    def __init__(self, data: bytes) -> None:
        self.byteorder, self._first = read_header(data)
        self._out = bytearray(data)

    def getvalue(self) -> bytes:
        """Return the file as built so far."""
        return bytes(self._out)

    def write_tree(self, ifd: Ifd, next_offset: int = 0) -> int:
        """Append an IFD, its blocks and its sub-IFDs.

        Args:
            ifd: The tree.
            next_offset: Offset of the IFD that follows it in its chain (0 for none).

        Returns:
            The offset of the written IFD.

        Raises:
            ValueError: If its image data depends on a byte order other than this file's,
                or the file would outgrow 32-bit offsets.
        """
        same = ifd.byteorder == self.byteorder
        if not same and ifd.blocks and ifd.wide_samples:
            raise ValueError("its samples are wider than 8 bits and stored in the other byte order")
        entries = {e.tag: e if same else _swapped(e, ifd.byteorder) for e in ifd.entries}
        for tag, blocks in ifd.blocks.items():
            entries[tag] = self.long_entry(tag, [self._append(block) for block in blocks])
        for tag, kids in ifd.children.items():
            entries[tag] = self.long_entry(tag, [self.write_tree(kid) for kid in kids])
        return self._write_ifd(self._records(entries.values()), next_offset)

    def long_entry(self, tag: int, values: Sequence[int]) -> Entry:
        """Make a LONG entry in this file's byte order.

        Args:
            tag: Tag id.
            values: The values.

        Returns:
            The entry.
        """
        return Entry(
            tag, LONG, len(values), struct.pack(f"{self.byteorder}{len(values)}I", *values)
        )

    def rewrite_first_ifd(self, added: Iterable[Entry], next_offset: int | None = None) -> None:
        """Write the first IFD again at the end, with entries added or replaced.

        Args:
            added: Entries in this file's byte order; they replace entries of the same tag.
            next_offset: Offset of the next IFD (the second page), or None to keep the
                current one.

        Raises:
            ValueError: If the file would outgrow 32-bit offsets.
        """
        replacing = {entry.tag: entry for entry in added}
        raw, old_next = (
            ([], 0) if not self._first else _raw_entries(self._out, self._first, self.byteorder)
        )
        records = {
            tag: struct.pack(f"{self.byteorder}HHI", tag, kind, count) + field_bytes
            for tag, kind, count, field_bytes in raw
            if tag not in replacing
        }
        records.update(self._records(replacing.values()))
        offset = self._write_ifd(records, old_next if next_offset is None else next_offset)
        self._out[4:8] = struct.pack(f"{self.byteorder}I", offset)
        self._first = offset

    def _records(self, entries: Iterable[Entry]) -> dict[int, bytes]:
        """Lay out entries: values over 4 bytes are appended, the rest go inline."""
        records = {}
        for entry in entries:
            head = struct.pack(f"{self.byteorder}HHI", entry.tag, entry.type, entry.count)
            if len(entry.value) <= 4:
                records[entry.tag] = head + entry.value.ljust(4, b"\x00")
            else:
                at = self._append(entry.value)
                records[entry.tag] = head + struct.pack(f"{self.byteorder}I", at)
        return records

    def _write_ifd(self, records: Mapping[int, bytes], next_offset: int) -> int:
        body = b"".join(records[tag] for tag in sorted(records))
        head = struct.pack(f"{self.byteorder}H", len(records))
        return self._append(head + body + struct.pack(f"{self.byteorder}I", next_offset))

    def _append(self, blob: bytes | memoryview) -> int:
        """Append at a word boundary (TIFF 6.0 wants even offsets); return the offset."""
        if len(self._out) % 2:
            self._out.append(0)
        offset = len(self._out)
        if offset + len(blob) > MAX_OFFSET:
            raise ValueError("the file would pass 4 GiB, the limit of a classic TIFF")
        self._out += blob
        return offset


def _raw_entries(
    buffer: bytes | bytearray | memoryview, offset: int, byteorder: str
) -> tuple[list[tuple[int, int, int, bytes]], int]:
    """The entries of an IFD as (tag, type, count, 4-byte field), and the next offset.

    Copies what it reads, so that no view of a bytearray stays behind to block its growth.
    """
    if offset < 8 or offset + 2 > len(buffer):
        raise ValueError(f"an IFD offset ({offset}) lies outside the file")
    (count,) = struct.unpack_from(f"{byteorder}H", buffer, offset)
    if count > MAX_ENTRIES:
        raise ValueError(f"an IFD claims {count} entries")
    end = offset + 2 + 12 * count + 4
    if end > len(buffer):
        raise ValueError(f"the IFD at offset {offset} runs past the end of the file")
    table = bytes(buffer[offset + 2 : end])
    entries = []
    for index in range(count):
        tag, kind, values = struct.unpack_from(f"{byteorder}HHI", table, 12 * index)
        entries.append((tag, kind, values, table[12 * index + 8 : 12 * index + 12]))
    (next_offset,) = struct.unpack_from(f"{byteorder}I", table, 12 * count)
    return entries, int(next_offset)


def _span(view: memoryview, start: int, length: int) -> memoryview:
    if start < 0 or length < 0 or start + length > len(view):
        raise ValueError(f"{length} bytes at offset {start} lie outside the file")
    return view[start : start + length]


def _swapped(entry: Entry, byteorder: str) -> Entry:
    """The entry with its values in the other byte order."""
    unit = _SWAP_UNITS.get(entry.type)
    if unit is None or entry.tag in BYTE_STREAM_TAGS:
        return entry
    value = entry.value
    swapped = b"".join(value[i : i + unit][::-1] for i in range(0, len(value), unit))
    return Entry(entry.tag, entry.type, entry.count, swapped)
