"""Where each source's colorized copy goes: the output tree mirrors the source tree.

An output keeps its source's relative path below the collection's output location, and
its name follows one rule:

- When the copy is written in the format the source's extension already names, the name
  is kept exactly, spelling and case included: ``a.tif -> a.tif``, ``a.tiff -> a.tiff``,
  ``x.PNG -> x.PNG``, ``p.jpeg -> p.jpeg``.
- Otherwise (BMP and JPEG 2000 become PNG and TIFF, a requested output format, a file
  whose extension is missing or does not match its content) the output extension is
  appended to the whole name: ``a.bmp -> a.bmp.png``, ``m.jp2 -> m.jp2.tif``,
  ``scan0001 -> scan0001.jpg``.

Replacing extensions instead would map ``a.tif`` and ``a.tiff``, ``x.png`` and ``x.PNG``,
or an archive's ``IMG_1.tif`` master and its ``IMG_1.jp2`` access copy to one output, and
which of the two won would depend on the order of scans. With this rule two different
sources get different outputs, with one contrived exception: a source named like another
source's converted output (``a.bmp`` next to a PNG called ``a.bmp.png``). The catalog
refuses that pair (``catalog.DuplicateOutput``) when it is registered.

On a case-insensitive destination (a macOS or Windows volume) ``X.png`` and ``x.png`` from
a case-sensitive source would overwrite each other. :func:`plan_outputs` refuses such
pairs with :class:`~scheduler.errors.OutputCollision`, naming both sources; whether a
local destination is case-insensitive is probed by :func:`is_case_insensitive`.

A destination equal to the source or inside it is refused by :func:`check_destination`:
the next scan would find the outputs and colorize them again. A destination that contains
the source, contains or lies inside any other collection's source or output, or a source
inside another collection's output, is refused by :func:`check_output_root` unless
``--force`` is given; whatever the submission, the workers replace no file that is not an
output they recorded for the same image.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeAlias

from catalog import CollectionRoots, ScannedImage
from scheduler.errors import InvalidDestination, OutputCollision, OverlappingOutput
from storage.codecs.formats import normalize_format, output_extension, output_format
from storage.scan import IMAGE_EXTENSIONS
from storage.scan_report import ScannedObject
from storage.uri import URI, contains, join, overlaps, parse_uri

logger = logging.getLogger(__name__)

#: A location as callers give it: a parsed URI, ``s3://`` text or a local path.
Location: TypeAlias = URI | str | os.PathLike[str]

#: Prefix of the empty file that probes whether a local folder ignores case.
_CASE_PROBE_PREFIX = ".panchro-Case-Probe-"


def check_destination(source: Location, output: Location) -> None:
    """Refuse an output location that is the source or lies inside it.

    Local paths are compared after resolving symbolic links, so a link into the source
    tree is caught; S3 locations are compared by bucket and whole key segments
    (``s3://b/scans-out`` is not inside ``s3://b/scans``). This is refused even with
    ``--force``: the next scan would colorize the outputs again. A source inside the
    output is refused by :func:`check_output_root` instead.

    Args:
        source: The collection's source location.
        output: The collection's output location.

    Raises:
        InvalidDestination: If ``output`` equals ``source`` or lies below it.
        InvalidURI: If either location cannot be parsed.
    """
    src, dst = parse_uri(source), parse_uri(output)
    if contains(src, dst):
        where = "is the source" if str(src) == str(dst) else "lies inside the source"
        raise InvalidDestination(
            f"the output {dst} {where} {src}: the next scan would find the colorized "
            "copies and process them again; choose an output outside the source"
        )


def check_output_root(
    source: Location,
    output: Location,
    known: Iterable[CollectionRoots],
    *,
    name: str,
    force: bool = False,
) -> None:
    """Refuse an output location that shares files with any source or another output.

    Every collection's source and output in the catalog counts, not only this one's: an
    output that contains a source, or lies inside one, puts colorized copies among
    originals (``--output hz/scans`` for ``hz/scans/box1`` writes ``box1/p000.png`` to
    the original ``hz/scans/p000.png``), and two collections writing to overlapping
    outputs would replace each other's files. Likewise a new source may not lie in, or
    contain, another collection's output. Local paths are compared after resolving links,
    S3 locations by bucket and whole key segments. The collection called ``name`` is
    this one being submitted again, and its own output does not count against itself.

    With ``force`` the overlap is accepted; the workers still replace no file that is
    not an output they recorded for the same image.

    Args:
        source: The collection's source location.
        output: The collection's output location.
        known: The catalog's collections (``catalog.collection_roots()``).
        name: The collection's name.
        force: Accept overlaps (``--force``).

    Raises:
        OverlappingOutput: If the output overlaps a source or another collection's output,
            or the source overlaps another collection's output, and ``force`` is false.
        InvalidURI: If a location cannot be parsed.
    """
    if force:
        return
    src, dst = parse_uri(source), parse_uri(output)
    if contains(dst, src) and src != dst:
        raise OverlappingOutput(
            f"the output {dst} contains the source {src}: copies would be written among "
            f"originals{_FORCE_HINT}"
        )
    for other in known:
        other_src, other_dst = parse_uri(other.source), parse_uri(other.output)
        if other.name == name:
            continue
        if overlaps(dst, other_src):
            raise OverlappingOutput(
                f"the output {dst} {_relation(dst, other_src)} the source {other_src} of "
                f"collection {other.name!r}: copies would be written among its "
                f"originals{_FORCE_HINT}"
            )
        if overlaps(dst, other_dst):
            raise OverlappingOutput(
                f"the output {dst} {_relation(dst, other_dst)} the output {other_dst} of "
                f"collection {other.name!r}: the two collections would write over each "
                f"other's copies{_FORCE_HINT}"
            )
        if overlaps(src, other_dst):
            raise OverlappingOutput(
                f"the source {src} {_relation(src, other_dst)} the output {other_dst} of "
                f"collection {other.name!r}: its copies would be written among these "
                f"originals{_FORCE_HINT}"
            )


def check_locations(source: Location, output: Location, *, force: bool = False) -> None:
    """Check a source and output pair on its own, before any catalog is opened or created.

    ``check_destination`` and, without the catalog's other collections,
    ``check_output_root``: a command can refuse ``--output`` that holds its source before
    it creates anything there (``panchro run`` keeps its catalog under the output).

    Args:
        source: The collection's source location.
        output: The collection's output location.
        force: Accept an output that contains the source (``--force``).

    Raises:
        InvalidDestination: If the output is the source or lies inside it.
        OverlappingOutput: If the output contains the source and ``force`` is false.
        InvalidURI: If a location cannot be parsed.
    """
    check_destination(source, output)
    check_output_root(source, output, (), name="", force=force)


#: The end of every overlap refusal.
_FORCE_HINT = (
    "; choose a separate output location, or pass --force to accept it (panchro then "
    "still writes over no file that it did not write for the same image)"
)


def _relation(first: URI, second: URI) -> str:
    if contains(first, second) and contains(second, first):
        return "is"
    return "contains" if contains(first, second) else "lies inside"


def output_relative(relative: str, source_format: str | None, requested: str | None = None) -> str:
    """Return the output's relative path for one source (see the module docstring).

    Args:
        relative: The source's ``/``-separated path below the collection's source.
        source_format: The source's image format as the scan found it (``"tiff"``,
            ``"JPEG"``...), or None when unknown (then written as PNG).
        requested: An output format asked for by the collection, or None to keep each
            source's format family.

    Returns:
        The output's ``/``-separated path below the collection's output.

    Raises:
        ValueError: If ``requested`` is not a format that can be written.
    """
    chosen = output_format(source_format, requested)
    name = relative.rsplit("/", 1)[-1]
    stem, dot, extension = name.rpartition(".")
    named = IMAGE_EXTENSIONS.get(extension.lower()) if dot and stem else None
    if named is not None and normalize_format(named) == chosen:
        return relative
    return relative + output_extension(source_format, requested)


def is_case_insensitive(output: Location) -> bool:
    """Return whether names that differ only in case are one file at ``output``.

    S3 keys are always case-sensitive. For a local destination an empty file with a
    mixed-case name is created in the nearest existing folder and looked up under the
    opposite case, then removed.

    Args:
        output: The collection's output location.

    Returns:
        True if the destination ignores case; False if it does not, or if it cannot be
        probed (a folder that cannot be written; the workers will fail there anyway).
    """
    location = parse_uri(output)
    if not location.is_local:
        return False
    folder = Path(location.key)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    try:
        handle, probe = tempfile.mkstemp(prefix=_CASE_PROBE_PREFIX, dir=folder)
    except OSError as exc:
        logger.debug("cannot probe %s for case sensitivity: %s", folder, exc)
        return False
    try:
        os.close(handle)
        head, name = os.path.split(probe)
        return os.path.exists(os.path.join(head, name.swapcase()))
    finally:
        try:
            os.unlink(probe)
        except OSError as exc:
            logger.warning("cannot remove the probe file %s: %s", probe, exc)


def plan_outputs(
    objects: Iterable[ScannedObject],
    *,
    output: Location,
    output_format: str | None = None,
    case_insensitive: bool = False,
) -> Iterator[ScannedImage]:
    """Turn scanned sources into catalog rows, each with its output location.

    Consumes ``objects`` lazily, one at a time. With ``case_insensitive`` it remembers
    the case-folded output path of every source seen (a few dozen bytes each).

    Args:
        objects: What ``scan_source()`` yields.
        output: The collection's output location.
        output_format: An output format for every image, or None to keep each source's
            format family.
        case_insensitive: Whether the destination ignores case (see
            :func:`is_case_insensitive`); then outputs differing only in case collide.

    Returns:
        An iterator of rows for ``catalog.register_images()``.

    Raises:
        OutputCollision: If two sources would be written to one output of a
            case-insensitive destination (raised while iterating).
        ValueError: If ``output_format`` is not a format that can be written.
    """
    base = parse_uri(output)
    if output_format is not None:
        output_extension(None, output_format)  # fail fast on an unknown format
    seen: dict[str, str] = {}
    for item in objects:
        relative = output_relative(item.relative, item.format, output_format)
        if case_insensitive:
            other = seen.setdefault(relative.casefold(), item.relative)
            if other != item.relative:
                raise OutputCollision(
                    f"{other} and {item.relative} would both be written to "
                    f"{join(base, relative)}: the destination ignores the case of names; "
                    "rename one of them or choose a case-sensitive destination"
                )
        yield ScannedImage(
            source_uri=str(item.uri),
            relative_path=item.relative,
            output_uri=str(join(base, relative)),
            size=item.size,
            checksum=item.checksum,
            checksum_kind=item.checksum_kind,
        )
