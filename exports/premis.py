"""``panchro export NAME --premis FILE``: a collection's PREMIS 3 record, written as a stream.

PREMIS wants every ``object`` before any ``event`` and the ``agent`` entities last, so the
collection is read twice, page by page (:func:`exports.objects.records`): once for the
objects, once for the events; the agents the events named come at the end. Each element is
written as soon as it is built (``lxml.etree.xmlfile``), so memory holds one page of rows,
never the document: 100,000 images cost what 500 do.

The document validates against the PREMIS 3.0 schema of the Library of Congress, shipped in
``exports/schemas/`` (see the README there). It is written to a temporary file beside the
target and linked into place only when complete, never over an existing file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

from lxml import etree

from catalog.engine import transaction
from catalog.preservation import collection_events
from catalog.queries import get_collection
from exports.errors import ExportError, TargetExists
from exports.objects import ROLE_OUTPUT, ROLE_SOURCE, Agent, image_objects, records
from exports.premis_nodes import (
    AgentBook,
    Node,
    collection_event_nodes,
    image_event_nodes,
    object_node,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from catalog.models import Collection

__all__ = [
    "PREMIS_NAMESPACE",
    "SCHEMA_PATH",
    "PremisCounts",
    "export_premis",
    "write_premis",
]

#: Namespace of PREMIS version 3.
PREMIS_NAMESPACE: Final = "http://www.loc.gov/premis/v3"
#: Namespace of ``xsi:type`` and ``xsi:schemaLocation``.
_XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"
#: Where readers find the schema (the copy in this package is the same file).
SCHEMA_LOCATION: Final = (
    f"{PREMIS_NAMESPACE} https://www.loc.gov/standards/premis/v3/premis-v3-0.xsd"
)
#: The PREMIS 3.0 schema shipped with panchro, for validation without a network.
SCHEMA_PATH: Final = Path(__file__).resolve().parent / "schemas" / "premis-v3-0.xsd"
#: Attributes written in the xsi namespace (the others are PREMIS's own, unqualified).
_XSI_ATTRIBUTES: Final = frozenset({"type"})


@dataclass(frozen=True, slots=True)
class PremisCounts:
    """What a PREMIS document holds.

    Attributes:
        objects: ``object`` entities (files).
        events: ``event`` entities.
        agents: ``agent`` entities.
    """

    objects: int
    events: int
    agents: int


def _write(xf: Any, item: Node, depth: int) -> None:
    """Write one node and its children, indented, into the open ``xmlfile``."""
    tag, attributes, content = item
    attrib = {
        (f"{{{_XSI}}}{key}" if key in _XSI_ATTRIBUTES else key): value
        for key, value in attributes.items()
    }
    with xf.element(f"{{{PREMIS_NAMESPACE}}}{tag}", attrib=attrib):
        if isinstance(content, str):
            xf.write(content)
            return
        for child in content:
            xf.write("\n" + "  " * (depth + 1))
            _write(xf, child, depth + 1)
        xf.write("\n" + "  " * depth)


def _objects(sessions: sessionmaker[Session], collection: Collection) -> Any:
    for page in records(sessions, collection, derivatives=True):
        for record in page:
            image = record.image
            items = image_objects(record)
            has_output = any(item.role == ROLE_OUTPUT for item in items)
            for item in items:
                if item.role == ROLE_SOURCE:
                    related = [("is source of", image.output_uri)] if has_output else []
                    yield object_node(item, related, image.relative_path)
                elif item.role == ROLE_OUTPUT:
                    yield object_node(item, [("has source", image.source_uri)], None)
                else:
                    yield object_node(item, [("has source", image.output_uri)], None)


def write_premis(
    sessions: sessionmaker[Session], name: str, agent: Agent, out: BinaryIO
) -> PremisCounts:
    """Write the PREMIS 3 document of a collection into a binary stream.

    Args:
        sessions: The catalog's session factory.
        name: The collection's name.
        agent: This panchro and host (the software agent named in the events).
        out: Where the UTF-8 XML goes.

    Returns:
        How many objects, events and agents were written.

    Raises:
        CollectionNotFound: If there is no collection of that name.
        ExportError: If the collection has no image at all (PREMIS needs one object).
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    with transaction(sessions) as db:
        collection = get_collection(db, name)
        general = collection_events(db, collection.id)
    book = AgentBook(agent)
    objects = events = 0
    with etree.xmlfile(out, encoding="utf-8") as xf:
        xf.write_declaration()
        root = {"version": "3.0", f"{{{_XSI}}}schemaLocation": SCHEMA_LOCATION}
        with xf.element(
            f"{{{PREMIS_NAMESPACE}}}premis",
            nsmap={"premis": PREMIS_NAMESPACE, "xsi": _XSI},
            attrib=root,
        ):
            for item in _objects(sessions, collection):
                xf.write("\n  ")
                _write(xf, item, 1)
                objects += 1
            if not objects:
                raise ExportError(f"collection {name} has no image: PREMIS needs one object")
            for item in collection_event_nodes(general, book):
                xf.write("\n  ")
                _write(xf, item, 1)
                events += 1
            for page in records(sessions, collection, attempts=True, derivatives=True, events=True):
                for record in page:
                    for item in image_event_nodes(record, collection, book):
                        xf.write("\n  ")
                        _write(xf, item, 1)
                        events += 1
                xf.flush()
            agents = book.nodes()
            for item in agents:
                xf.write("\n  ")
                _write(xf, item, 1)
            xf.write("\n")
    out.write(b"\n")
    return PremisCounts(objects, events, len(agents))


def export_premis(
    sessions: sessionmaker[Session], name: str, agent: Agent, target: Path
) -> PremisCounts:
    """Write the PREMIS 3 document of a collection to a new file, complete or not at all.

    Args:
        sessions: The catalog's session factory.
        name: The collection's name.
        agent: This panchro and host.
        target: The file to create; it must not exist.

    Returns:
        How many objects, events and agents were written.

    Raises:
        TargetExists: If ``target`` exists; it is left untouched.
        CollectionNotFound: If there is no collection of that name.
        ExportError: If the collection has no image.
        OSError: If the file cannot be written.
    """
    if os.path.lexists(target):
        raise TargetExists(f"{target} exists: choose another file, or remove it first")
    folder = target.parent
    folder.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        with open(fd, "wb") as out:
            counts = write_premis(sessions, name, agent, out)
            out.flush()
            os.fsync(out.fileno())
        publish(Path(temporary), target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
    return counts


def publish(temporary: Path, target: Path) -> None:
    """Give a finished temporary file its name, never replacing what is there.

    A hard link fails if the name exists; where the file system has no hard links, a
    rename after a check is the fallback. The temporary name is left for the caller to remove.

    Args:
        temporary: The finished file.
        target: Its name to be.

    Raises:
        TargetExists: If ``target`` exists.
    """
    try:
        os.link(temporary, target)
    except FileExistsError as exc:
        raise TargetExists(f"{target} exists: choose another file, or remove it first") from exc
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        if os.path.lexists(target):
            raise TargetExists(f"{target} exists: choose another file, or remove it first") from exc
        os.rename(temporary, target)
