"""Where a worker may write an image's output, and a write that replaces nothing of another's.

A worker writes one key per image: the output URI the catalog planned for it. It never
writes an original (of this image or of any image in the catalog), nor outside the
collection's output location (a link in the output tree is not followed out of it). It
records the SHA-256 of the output on its try before writing, then writes with
``overwrite=False``: a file already there is replaced only if the catalog recorded its
digest for the same image (see ``catalog.outputs``), so a try that takes over from one
killed after its write recognises that file, and anything else is left untouched.
"""

from __future__ import annotations

import mimetypes
import os
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from catalog import Claim, collection_roots, image_sources_among
from storage.errors import OutputExists
from storage.uri import URI, contains, holds_resolved, parse_uri
from workers.errors import ForeignOutput, OutputIsSource

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from storage.base import Storage

__all__ = [
    "RESOLVED_TTL_S",
    "OutputPlan",
    "check_output",
    "collections_holding",
    "plan_output",
    "write_output",
]

#: Seconds a collection's location, parsed and resolved through its links, is reused by
#: the checks before a write: resolving every collection's source for every image cost
#: 80 ms per image in a catalog of 1,000 collections (``benchmarks/catalog_size.py``).
RESOLVED_TTL_S: Final = 30.0
#: Locations kept resolved at most; beyond it the cache starts again empty.
RESOLVED_MAX: Final = 100_000

#: Stored location -> (parsed, resolved local path or "", when resolved).
_resolved: dict[str, tuple[URI, str, float]] = {}


def _resolved_location(text: str, now: float) -> tuple[URI, str]:
    hit = _resolved.get(text)
    if hit is not None and now - hit[2] < RESOLVED_TTL_S:
        return hit[0], hit[1]
    uri = parse_uri(text)
    real = os.path.realpath(uri.key) if uri.is_local else ""
    if len(_resolved) >= RESOLVED_MAX:
        _resolved.clear()
    _resolved[text] = (uri, real, now)
    return uri, real


def collections_holding(
    locations: Iterable[tuple[int, str]],
    target: URI,
    *,
    resolved: str | None = None,
    now: float | None = None,
) -> list[int]:
    """Return the ids whose location is ``target`` or holds it, as ``contains()`` tells.

    Each stored location is parsed and resolved through its links at most once every
    :data:`RESOLVED_TTL_S` seconds in a process, and ``target`` once per image: a worker
    asks this for every image, of every collection in the catalog. A link retargeted
    meanwhile is seen within that time; the write itself never replaces a file panchro
    did not write, whatever this answers.

    Args:
        locations: ``(id, stored location)`` of each collection.
        target: The location to be written.
        resolved: ``os.path.realpath`` of a local ``target``, if the caller has it.
        now: ``time.monotonic()`` by default.

    Returns:
        The ids, in the order given.
    """
    now = time.monotonic() if now is None else now
    if not target.is_local:
        resolved = None
    elif resolved is None:
        resolved = os.path.realpath(target.key)
    held = []
    for ident, text in locations:
        outer, top = _resolved_location(text, now)
        if outer.scheme != target.scheme:
            continue
        if resolved is not None:
            inside = holds_resolved(top, resolved)
        else:
            inside = contains(outer, target)
        if inside:
            held.append(ident)
    return held


@dataclass(frozen=True)
class OutputPlan:
    """Where one claimed image's output goes, and what the catalog knows of that place.

    Attributes:
        uri: The output URI planned for the image.
        source_uri: The image's original.
        root: The collection's output location.
        sources_at: Originals of catalog images at ``uri`` (never written over).
    """

    uri: str
    source_uri: str
    root: str
    sources_at: tuple[str, ...]


def plan_output(db: Session, claim: Claim, root: str) -> OutputPlan:
    """Look up what is known of a claimed image's output location.

    Args:
        db: The caller's session.
        claim: The claim of the image.
        root: Its collection's output location.

    Returns:
        The plan, for :func:`check_output`.

    Raises:
        DatabaseUnavailable: If the database cannot be reached.
    """
    output = parse_uri(claim.output_uri)
    resolved = os.path.realpath(output.key) if output.is_local else None
    roots = collection_roots(db)
    holders = collections_holding(((r.id, r.source) for r in roots), output, resolved=resolved)
    candidates = {claim.output_uri}
    if resolved is not None:
        candidates.add(resolved)
    sources = tuple(image_sources_among(db, holders, candidates))
    return OutputPlan(claim.output_uri, claim.source_uri, root, sources)


def check_output(plan: OutputPlan) -> None:
    """Refuse an output that is an original, or lies outside the collection's output.

    Args:
        plan: What :func:`plan_output` found.

    Raises:
        OutputIsSource: If the output may not be written there; nothing was written.
    """
    source, output = parse_uri(plan.source_uri), parse_uri(plan.uri)
    same = source == output
    if not same and source.is_local and output.is_local:
        same = os.path.realpath(source.key) == os.path.realpath(output.key)
    if same:
        raise OutputIsSource(
            f"the output {output} is the original itself; the scan is never overwritten. "
            "Submit the collection again with an output location outside its source"
        )
    if plan.sources_at:
        raise OutputIsSource(
            f"the output {output} is the original {plan.sources_at[0]} of a collection; "
            "originals are never overwritten. Submit the collection again with an output "
            "location that holds no originals"
        )
    root = parse_uri(plan.root)
    if not contains(root, output) or output == root:
        raise OutputIsSource(
            f"the output {output} lies outside the collection's output {root} (through a "
            "link, or a catalog row changed by hand); nothing was written"
        )


def write_output(
    storage: Storage, uri: str, data: bytes, *, extension: str, ours: Collection[str]
) -> None:
    """Write an image's output over nothing of another's.

    The caller has recorded the output's SHA-256 on the try first
    (``catalog.record_output_intent``, which returns ``ours``), so that a try that dies
    after the write leaves a file the next try knows as the image's own.

    Args:
        storage: The store of ``uri``.
        uri: The planned output URI.
        data: The encoded output.
        extension: Its file name extension, for the content type.
        ours: SHA-256 digests of the files this image wrote (the file at ``uri`` may be
            replaced only if it is one of them).

    Raises:
        ForeignOutput: If a file that is not the image's own is at ``uri``; left untouched.
        StorageError: If the write fails; nothing partial is left behind.
    """
    content_type = mimetypes.guess_type(f"output{extension}")[0]
    try:
        storage.write(uri, data, content_type=content_type, overwrite=False, replaceable=ours)
    except OutputExists as exc:
        found = f" (sha256 {exc.sha256[:12]}...)" if exc.sha256 else ""
        raise ForeignOutput(
            f"the output {uri} already exists{found} and is not a file panchro wrote for "
            "this image; left untouched. Move it away (or choose another output location) "
            "and retry the image"
        ) from exc
