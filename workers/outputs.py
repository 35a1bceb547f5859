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

import hashlib
import mimetypes
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog import (
    Claim,
    collection_roots,
    image_sources_among,
    record_output_intent,
    transaction,
)
from storage.errors import OutputExists
from storage.uri import contains, parse_uri
from workers.errors import ForeignOutput, OutputIsSource

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from storage.base import Storage

__all__ = ["OutputPlan", "check_output", "plan_output", "write_output"]


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
    holders = [
        roots.id for roots in collection_roots(db) if contains(parse_uri(roots.source), output)
    ]
    candidates = {claim.output_uri}
    if output.is_local:
        candidates.add(os.path.realpath(output.key))
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
    sessions: sessionmaker[Session],
    storage: Storage,
    *,
    image_id: int,
    attempt_id: int,
    uri: str,
    data: bytes,
    extension: str,
) -> str | None:
    """Record the output's SHA-256 on the try, then write it over nothing of another's.

    Args:
        sessions: The catalog's session factory.
        storage: The store of ``uri``.
        image_id: The image.
        attempt_id: Its running try.
        uri: The planned output URI.
        data: The encoded output.
        extension: Its file name extension, for the content type.

    Returns:
        The SHA-256 of what was written; None if the try no longer holds the image (then
        nothing was written).

    Raises:
        ForeignOutput: If a file that is not the image's own is at ``uri``; left untouched.
        StorageError: If the write fails; nothing partial is left behind.
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    digest = hashlib.sha256(data).hexdigest()
    with transaction(sessions) as db:
        ours = record_output_intent(db, image_id, attempt_id, digest)
    if ours is None:
        return None
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
    return digest
