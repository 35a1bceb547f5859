"""PREMIS 3 entities of one image, built from catalog rows as small element trees.

A :data:`Node` is ``(tag, attributes, children or text)``, tags without namespace: cheap to
build, and written by :mod:`exports.premis` straight into the output stream. The words
follow the Library of Congress preservation vocabularies where they have one (event types
``ingestion``, ``creation``, ``fixity check``; object roles ``source`` and ``outcome``;
agent role ``executing program``; agent types ``software`` and ``hardware``).

- Objects: each image's source, its output once done, and each access copy, with the
  sha256 the catalog holds, the size, the format (MIME type) and where it is stored.
- Events: the registration of each source (``ingestion``), each try at colorizing it
  (``creation``: model, checkpoint, input size, precision, device, host, upsampling,
  outcome; a failure with its reason and code), each access copy made, and every recorded
  preservation event (fixity checks).
- Agents: panchro with its version, each DDColor checkpoint (by sha256), each worker, and
  whoever recorded an event; :class:`AgentBook` collects the ones the events name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Final, TypeAlias

from catalog.models import Attempt, AttemptOutcome, Collection, Derivative, Event, ImageStatus
from catalog.preservation import ImageRecord
from exports.objects import ROLE_DERIVATIVE, ROLE_OUTPUT, ROLE_SOURCE, Agent, PreservedObject

__all__ = ["AgentBook", "Node", "collection_event_nodes", "image_event_nodes", "object_node"]

#: ``(tag, attributes, children or text)``; tags are PREMIS local names.
Node: TypeAlias = tuple[str, dict[str, str], "tuple[Node, ...] | str"]

#: Identifier type of objects: their storage location.
_URI: Final = "URI"
#: Identifier type of the events panchro derives from its catalog.
_EVENT_ID: Final = "panchro event"
#: Characters XML 1.0 cannot carry (C0 controls but tab, newline, return; surrogates).
_NOT_XML: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
#: Words of each try's outcome.
_TRY_OUTCOMES: Final = {
    AttemptOutcome.DONE: ("success", None),
    AttemptOutcome.OOM_RETRY: ("failure", "out of memory at this input size; tried again smaller"),
    AttemptOutcome.FAILED: ("failure", None),
    AttemptOutcome.LOST: ("failure", "the worker was lost (killed or cut off) during the try"),
}


def _text(value: object) -> str:
    """Return ``value`` as text XML can hold: characters it cannot are replaced by U+FFFD."""
    return _NOT_XML.sub("\ufffd", str(value))


def _node(tag: str, *children: Node | None, **attributes: str) -> Node:
    """An element with children; ``None`` children are left out."""
    return (tag, attributes, tuple(child for child in children if child is not None))


def _leaf(tag: str, value: object) -> Node:
    """An element holding text."""
    return (tag, {}, _text(value))


def _identifier(tag: str, kind: str, value: str, role: str | None = None) -> Node:
    """``<tag>`` with ``<tagType>``, ``<tagValue>`` and, for links, a ``<...Role>``."""
    role_tag = tag.removesuffix("Identifier") + "Role"
    return _node(
        tag,
        _leaf(f"{tag}Type", kind),
        _leaf(f"{tag}Value", value),
        _leaf(role_tag, role) if role is not None else None,
    )


def _when(moment: datetime | None) -> str:
    """ISO 8601 in UTC, as ``eventDateTime`` wants it; ``unknown`` when not recorded."""
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else "unknown"


class AgentBook:
    """The agents the events name, collected while they are written, for the end.

    Args:
        agent: This panchro on this host (the exporting software).
    """

    def __init__(self, agent: Agent) -> None:
        self._agents: dict[tuple[str, str], Node] = {}
        self.panchro = self._add(
            "software",
            agent.software,
            "panchro",
            "software",
            agent.version,
            "registers, colorizes, checks and exports the collection",
        )

    def _add(
        self, kind: str, value: str, name: str, agent_type: str, version: str | None, note: str
    ) -> tuple[str, str]:
        key = (kind, value)
        if key not in self._agents:
            self._agents[key] = _node(
                "agent",
                _identifier("agentIdentifier", kind, value),
                _leaf("agentName", name),
                _leaf("agentType", agent_type),
                _leaf("agentVersion", version) if version else None,
                _leaf("agentNote", note),
            )
        return key

    def checkpoint(self, sha256: str, model: str | None, untrained: bool) -> tuple[str, str]:
        """Name the DDColor checkpoint of that sha256 as a software agent.

        Args:
            sha256: The checkpoint file's digest.
            model: The model name (``ddcolor_modelscope``), if known.
            untrained: Whether the weights were random (a demonstration).

        Returns:
            The agent's identifier (type, value), for ``linkingAgentIdentifier``.
        """
        note = f"DDColor checkpoint file, sha256 {sha256}"
        if untrained:
            note += "; random (untrained) weights: the colours are not a colorization"
        return self._add(
            "sha256", sha256, f"DDColor {model or 'checkpoint'}", "software", model, note
        )

    def worker(self, name: str) -> tuple[str, str]:
        """Name a worker (``cuda0@host``) as a hardware agent.

        Args:
            name: The worker's node name.

        Returns:
            The agent's identifier (type, value).
        """
        return self._add("worker", name, name, "hardware", None, "worker host and device")

    def recorder(self, label: str) -> tuple[str, str]:
        """Name whoever recorded an event as an agent.

        Args:
            label: The event's ``agent`` (``HOST panchro VERSION``).

        Returns:
            The agent's identifier (type, value).
        """
        return self._add("event agent", label, label, "software", None, "recorded the event")

    def nodes(self) -> list[Node]:
        """Return every agent named so far, in the order first named.

        Returns:
            The ``agent`` nodes.
        """
        return list(self._agents.values())


def object_node(
    item: PreservedObject, related: Iterable[tuple[str, str]], original: str | None
) -> Node:
    """A PREMIS ``file`` object.

    Args:
        item: The file and what the catalog recorded of it.
        related: ``(relationship sub-type, related URI)`` pairs (derivation).
        original: Its name at ingestion (the source's relative path), if any.

    Returns:
        The ``object`` node.
    """
    fixity = None
    if item.sha256:
        fixity = _node(
            "fixity",
            _leaf("messageDigestAlgorithm", "SHA-256"),
            _leaf("messageDigest", item.sha256),
            _leaf("messageDigestOriginator", "panchro"),
        )
    return _node(
        "object",
        _identifier("objectIdentifier", _URI, item.uri),
        _node(
            "objectCharacteristics",
            _leaf("compositionLevel", 0),
            fixity,
            _leaf("size", item.size) if item.size is not None else None,
            _node("format", _node("formatDesignation", _leaf("formatName", item.mime_type))),
        ),
        _leaf("originalName", original) if original else None,
        _node("storage", _identifier("contentLocation", _URI, item.uri)),
        *(
            _node(
                "relationship",
                _leaf("relationshipType", "derivation"),
                _leaf("relationshipSubType", subtype),
                _identifier("relatedObjectIdentifier", _URI, uri),
            )
            for subtype, uri in related
        ),
        type="premis:file",
    )


def _event(
    event_id: str,
    event_type: str,
    moment: datetime | None,
    detail: str | None,
    outcome: str,
    notes: Iterable[str],
    agents: Iterable[tuple[tuple[str, str], str]],
    objects: Iterable[tuple[str, str]],
) -> Node:
    return _node(
        "event",
        _identifier("eventIdentifier", _EVENT_ID, event_id),
        _leaf("eventType", event_type),
        _leaf("eventDateTime", _when(moment)),
        _node("eventDetailInformation", _leaf("eventDetail", detail)) if detail else None,
        _node(
            "eventOutcomeInformation",
            _leaf("eventOutcome", outcome),
            *(
                _node("eventOutcomeDetail", _leaf("eventOutcomeDetailNote", note))
                for note in notes
                if note
            ),
        ),
        *(_identifier("linkingAgentIdentifier", *key, role) for key, role in agents),
        *(_identifier("linkingObjectIdentifier", _URI, uri, role) for uri, role in objects),
    )


def _failure_notes(reason: str | None, code: str | None) -> list[str]:
    return [f"reason: {reason}" if reason else "", f"failure code: {code}" if code else ""]


def _try_detail(tried: Attempt, record: ImageRecord, collection: Collection) -> str:
    image = record.image
    model = image.model_name or collection.model_name or "unknown model"
    checkpoint = image.checkpoint_sha256 or collection.checkpoint_sha256
    parts = [
        f"colorization try {tried.number} with DDColor {model}",
        f"checkpoint sha256 {checkpoint}" if checkpoint else "checkpoint unknown",
        f"input size {tried.input_size} px" if tried.input_size else "input size unknown",
        f"precision {tried.precision or 'unknown'}",
        f"device {tried.device or 'unknown'}",
        f"host {tried.worker or 'unknown'}",
        f"upsampling {image.upsample or collection.upsample or 'unknown'}",
    ]
    if tried.finished_at is not None:
        parts.append(f"finished {_when(tried.finished_at)}")
    return "; ".join(parts)


def _try_events(record: ImageRecord, collection: Collection, book: AgentBook) -> list[Node]:
    image = record.image
    checkpoint = image.checkpoint_sha256 or collection.checkpoint_sha256
    model = image.model_name or collection.model_name
    last_failed = max(
        (t.number for t in record.attempts if t.outcome is AttemptOutcome.FAILED), default=None
    )
    found = []
    for tried in record.attempts:
        agents = [(book.panchro, "executing program")]
        if checkpoint:
            agents.append(
                (book.checkpoint(checkpoint, model, collection.untrained), "executing program")
            )
        if tried.worker:
            agents.append((book.worker(tried.worker), "executing hardware"))
        objects = [(image.source_uri, "source")]
        if tried.outcome is AttemptOutcome.DONE and image.output_sha256:
            objects.append((image.output_uri, "outcome"))
        if tried.outcome is None:
            outcome, notes = "in progress", []
        else:
            outcome, note = _TRY_OUTCOMES[tried.outcome]
            notes = [note or "", f"error: {tried.error}" if tried.error else ""]
            if tried.number == last_failed and image.status is ImageStatus.FAILED:
                notes += _failure_notes(image.last_error, image.failure_code)
        found.append(
            _event(
                f"attempt/{tried.id}",
                "creation",
                tried.started_at,
                _try_detail(tried, record, collection),
                outcome,
                notes,
                agents,
                objects,
            )
        )
    if image.status is ImageStatus.FAILED and last_failed is None:
        # Failed before any try was recorded (an unreadable original, too many lost tries).
        found.append(
            _event(
                f"image/{image.id}/failure",
                "creation",
                image.finished_at,
                "colorization not possible",
                "failure",
                _failure_notes(image.last_error, image.failure_code),
                [(book.panchro, "executing program")],
                [(image.source_uri, "source")],
            )
        )
    return found


def _ingestion(record: ImageRecord, collection: Collection, book: AgentBook) -> Node:
    image = record.image
    detail = f"registered from a scan of {collection.source} as {image.relative_path}"
    if image.source_checksum:
        detail += f"; {image.source_checksum_kind or 'checksum'} at scan {image.source_checksum}"
    if image.status is ImageStatus.SKIPPED:
        outcome, notes = "skipped", _failure_notes(image.last_error, image.failure_code)
    else:
        outcome, notes = "success", []
    return _event(
        f"image/{image.id}/ingestion",
        "ingestion",
        collection.created_at,
        detail,
        outcome,
        notes,
        [(book.panchro, "executing program")],
        [(image.source_uri, "source")],
    )


def _copy_event(copy: Derivative, record: ImageRecord, book: AgentBook) -> Node:
    detail = f"access copy ({copy.kind}, long edge {copy.long_edge} px, {copy.width}x{copy.height})"
    return _event(
        f"derivative/{copy.id}/creation",
        "creation",
        copy.created_at,
        detail,
        "success",
        [],
        [(book.panchro, "executing program")],
        [(record.image.output_uri, "source"), (copy.uri, "outcome")],
    )


def _recorded_uri(happened: Event, record: ImageRecord) -> str | None:
    """The object a recorded event is about, from its role (and its detail, for a copy)."""
    image = record.image
    if happened.object_role == ROLE_SOURCE:
        return image.source_uri
    if happened.object_role == ROLE_OUTPUT:
        return image.output_uri
    if happened.object_role == ROLE_DERIVATIVE:
        detail = happened.detail or ""
        for copy in record.derivatives:
            if detail.startswith(f"{copy.uri}: ") or len(record.derivatives) == 1:
                return copy.uri
    return None


def _recorded(happened: Event, record: ImageRecord | None, book: AgentBook) -> Node:
    uri = _recorded_uri(happened, record) if record is not None else None
    agents = [(book.recorder(happened.agent), "executing program")] if happened.agent else []
    role = f"object: {happened.object_role}" if happened.object_role else None
    return _event(
        f"event/{happened.id}",
        happened.event_type,
        happened.occurred_at,
        role,
        happened.outcome,
        [happened.detail or ""],
        agents,
        [(uri, "source")] if uri else [],
    )


def image_event_nodes(record: ImageRecord, collection: Collection, book: AgentBook) -> list[Node]:
    """The events of one image: ingestion, tries, access copies, recorded events.

    Args:
        record: The image with its attempts, derivatives and events loaded.
        collection: Its collection (model, checkpoint, source).
        book: Where the agents the events name are collected.

    Returns:
        The ``event`` nodes, in that order.
    """
    found = [_ingestion(record, collection, book), *_try_events(record, collection, book)]
    found.extend(_copy_event(copy, record, book) for copy in record.derivatives)
    found.extend(_recorded(happened, record, book) for happened in record.events)
    return found


def collection_event_nodes(events: Iterable[Event], book: AgentBook) -> list[Node]:
    """The recorded events about the whole collection (tied to no image).

    Args:
        events: The events.
        book: Where the agents they name are collected.

    Returns:
        The ``event`` nodes.
    """
    return [_recorded(happened, None, book) for happened in events]
