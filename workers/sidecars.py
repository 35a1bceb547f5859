"""The JSON sidecar beside an output: the image's provenance in a file that travels with it.

With ``--sidecars`` the worker writes ``<output name>.json`` next to each master
(``a.tif -> a.tif.json``) after the master and its access copies, and records its URI in
``images.sidecar_uri``. A master's name always ends in an image extension, so no master
is ever called like a sidecar. It holds what the catalog holds of the output::

    {
      "format": "panchro-sidecar/1",
      "software": "panchro 0.1.0", "panchro_version": "0.1.0",
      "collection": "1920s", "image_id": 12,
      "source": {"uri": ..., "sha256": ..., "width": ..., "height": ..., "mode": ...,
                 "bit_depth": ..., "format": "TIFF"},
      "output": {"uri": ..., "sha256": ..., "size": ...},
      "model": {"name": ..., "checkpoint_sha256": ..., "untrained": false},
      "processing": {"input_size": 512, "sizes_tried": [1024, 512], "precision": "fp16",
                     "upsample": "guided", "device": ..., "backend": "cuda", "host": ...},
      "times": {"started_at": ..., "finished_at": ..., "duration_s": 1.234},
      "derivatives": [{"kind": "jpeg", "long_edge": 3000, "uri": ..., "sha256": ...,
                       "size": ..., "width": ..., "height": ...}],
      "untrained": false,
      "ai_generated": {"digital_source_type": ..., "note": ...}
    }

Digests are those recorded in the catalog; ``finished_at`` is when the sidecar was made,
just before the catalog records the image as done. A sidecar already at its place is
replaced only when it names a master of the same image (``workers.own_files``).
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Final

from storage.stamp import digital_source_type, provenance_note
from workers.colorizing import software_name
from workers.own_files import own_digests, write_beside

if TYPE_CHECKING:
    from catalog import Provenance
    from catalog.derivatives import DerivativeRecord
    from storage.base import Storage
    from workers.colorizing import ColorizedCopy, Original

__all__ = [
    "SIDECAR_FORMAT",
    "SidecarFacts",
    "build_sidecar",
    "sidecar_master",
    "sidecar_uri",
    "write_sidecar",
]

#: Value of a sidecar's ``format`` field: what it is, and the version of its layout.
SIDECAR_FORMAT: Final = "panchro-sidecar/1"
#: Extension appended to the output's name.
SIDECAR_EXTENSION: Final = ".json"
#: Largest sidecar read back to recognise it as the image's own (bytes); they are a few kB.
SIDECAR_HEAD_BYTES: Final = 1024 * 1024


def sidecar_uri(output_uri: str) -> str:
    """Return where the sidecar of an output goes: its name plus ``.json``.

    Args:
        output_uri: The master's URI.

    Returns:
        The sidecar's URI, beside it.
    """
    return output_uri + SIDECAR_EXTENSION


@dataclass(frozen=True)
class SidecarFacts:
    """What a sidecar says beyond the colorized copy and the catalog's provenance.

    Attributes:
        image_id: The catalog image.
        collection: Its collection's name.
        source_uri: Where the original was read.
        output_uri: Where the master was written.
        upsample: How colour was brought to full resolution.
        host: The worker, as recorded on the image.
        started_at: When the try claimed the image.
        untrained: The weights were random.
    """

    image_id: int
    collection: str
    source_uri: str
    output_uri: str
    upsample: str | None
    host: str | None
    started_at: datetime | None
    untrained: bool


def build_sidecar(
    facts: SidecarFacts,
    copy: ColorizedCopy,
    original: Original,
    provenance: Provenance,
    derivatives: Sequence[DerivativeRecord],
    *,
    finished_at: datetime | None = None,
) -> bytes:
    """Build the sidecar of one output.

    Args:
        facts: The image, its places, worker and times.
        copy: The colorized master (its provenance stamp).
        original: The original as read.
        provenance: What the catalog records of the output.
        derivatives: The access copies written beside it.
        finished_at: When the work ended; None for now.

    Returns:
        UTF-8 JSON, indented, with a final newline.
    """
    decoded = original.decoded
    finished_at = finished_at or datetime.now(UTC)
    document: dict[str, Any] = {
        "format": SIDECAR_FORMAT,
        "software": software_name(),
        "panchro_version": _version(),
        "collection": facts.collection,
        "image_id": facts.image_id,
        "source": {
            "uri": facts.source_uri,
            "sha256": original.sha256,
            "size": len(original.data),
            "width": decoded.width,
            "height": decoded.height,
            "mode": decoded.mode,
            "bit_depth": decoded.bit_depth,
            "format": decoded.format,
        },
        "output": {
            "uri": facts.output_uri,
            "sha256": provenance.output_sha256,
            "size": provenance.output_size,
        },
        "model": {
            "name": provenance.model_name,
            "checkpoint_sha256": provenance.checkpoint_sha256,
            "untrained": facts.untrained,
        },
        "processing": {
            "input_size": provenance.input_size,
            "sizes_tried": list(provenance.sizes_tried or [provenance.input_size]),
            "precision": provenance.precision,
            "upsample": facts.upsample,
            "device": provenance.device,
            "backend": provenance.backend,
            "host": facts.host,
        },
        "times": {
            "started_at": _iso(facts.started_at),
            "finished_at": _iso(finished_at),
            "duration_s": _seconds(facts.started_at, finished_at),
        },
        "derivatives": [asdict(record) for record in derivatives],
        "untrained": facts.untrained,
        "ai_generated": {
            "digital_source_type": digital_source_type(copy.stamp),
            "note": provenance_note(copy.stamp),
        },
    }
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def sidecar_master(head: bytes) -> str | None:
    """Return the SHA-256 of the output a sidecar describes, from its bytes.

    Args:
        head: The first :data:`SIDECAR_HEAD_BYTES` bytes of a file.

    Returns:
        ``output.sha256`` of a panchro sidecar, or None for anything else.
    """
    try:
        document = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(document, dict) or document.get("format") != SIDECAR_FORMAT:
        return None
    output = document.get("output")
    digest = output.get("sha256") if isinstance(output, dict) else None
    return digest if isinstance(digest, str) else None


def write_sidecar(storage: Storage, uri: str, data: bytes, *, masters: Collection[str]) -> None:
    """Write a sidecar, over nothing but the image's own earlier sidecar.

    Args:
        storage: The store of the output.
        uri: The sidecar's place (:func:`sidecar_uri`).
        data: Its content (:func:`build_sidecar`).
        masters: SHA-256 of every master of the image.

    Raises:
        AccessFileFailed: If a file that is not the image's own is there; left untouched.
        StorageError: If the write fails; nothing partial is left behind.
    """
    replaceable = own_digests(storage, uri, masters, sidecar_master, SIDECAR_HEAD_BYTES)
    write_beside(
        storage,
        uri,
        data,
        content_type="application/json",
        replaceable=replaceable,
        what="the sidecar",
    )


def _version() -> str | None:
    try:
        return version("panchro")
    except PackageNotFoundError:
        return None


def _seconds(started_at: datetime | None, finished_at: datetime) -> float | None:
    if started_at is None:
        return None
    return round((finished_at - started_at).total_seconds(), 3)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")
