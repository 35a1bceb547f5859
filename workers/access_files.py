"""Writing what a collection asks for beside each master: access copies, then the sidecar.

``process_image()`` calls :func:`write_access_files` once the master is written, and
records the result with ``mark_done()`` in one transaction::

    written = write_access_files(sessions, storage_for, plan, attempt_id, copy, ...)
    with transaction(sessions) as db:
        if mark_done(db, ...):
            written.record(db, image_id)

Before anything is written, every place is checked against the catalog: it must lie in
the collection's output, and be no original and no other image's output (of any
collection whose source or output holds it); only then are the copies written (each over
nothing but the image's own earlier copy, see ``workers.own_files``), and the sidecar
last, so that it can list them. Any failure fails the image with the reason; the master
stays (it is complete, and the retry replaces it as its own).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from catalog import collection_roots, image_sources_among, recorded_outputs, transaction
from catalog.derivatives import DerivativeRecord, held_try, record_access_files
from catalog.outputs import image_outputs_among
from storage.errors import StorageError, StorageMisconfigured, StorageUnavailable
from storage.uri import contains, parse_uri
from workers.access_options import AccessFiles
from workers.derivatives import write_derivatives
from workers.errors import AccessFileFailed
from workers.outputs import collections_holding
from workers.sidecars import SidecarFacts, build_sidecar, sidecar_uri, write_sidecar
from workers.weights import UNTRAINED_CHECKPOINT

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from catalog import Claim, Collection, Provenance
    from workers.colorizing import ColorizedCopy, Original
    from workers.readahead import StorageFor

__all__ = ["AccessPlan", "WrittenAccessFiles", "check_access_places", "write_access_files"]


@dataclass(frozen=True)
class AccessPlan:
    """What a collection asks for beside a claimed image's master, and where it goes.

    Attributes:
        claim: The claim of the image (its source and output).
        wanted: The access copies and sidecar asked for.
        root: The collection's output location.
        collection: The collection's name.
    """

    claim: Claim
    wanted: AccessFiles
    root: str
    collection: str

    @classmethod
    def of(cls, collection: Collection, claim: Claim) -> AccessPlan:
        """Read the plan off a collection's row (in the claim's transaction).

        Args:
            collection: The image's collection.
            claim: The claim of the image.

        Returns:
            The plan; options that cannot be read are kept as ``wanted.invalid``.
        """
        wanted = AccessFiles.from_options(collection.options)
        return cls(claim, wanted, collection.output, collection.name)


@dataclass(frozen=True)
class WrittenAccessFiles:
    """The files written beside one master, to record with the image.

    Attributes:
        derivatives: The access copies.
        sidecar_uri: The sidecar, or None.
        replaces: Whether earlier rows of the image may need replacing: a first try that
            wrote nothing has nothing to record, nor has a try that lost the image.
    """

    derivatives: tuple[DerivativeRecord, ...] = ()
    sidecar_uri: str | None = None
    replaces: bool = True

    def record(self, db: Session, image_id: int) -> None:
        """Record the files on the image, in the transaction of ``mark_done()``.

        Args:
            db: The caller's session.
            image_id: The image.

        Raises:
            DatabaseUnavailable: If the database cannot be reached.
        """
        if self.derivatives or self.sidecar_uri or self.replaces:
            record_access_files(db, image_id, self.derivatives, self.sidecar_uri)


def write_access_files(
    sessions: sessionmaker[Session],
    storage_for: StorageFor,
    plan: AccessPlan,
    attempt_id: int,
    copy: ColorizedCopy,
    original: Original,
    provenance: Provenance,
) -> WrittenAccessFiles:
    """Write the access copies and the sidecar a collection asks for beside a master.

    Args:
        sessions: The catalog's session factory.
        storage_for: Returns the store of a location.
        plan: What the collection asks for, for which image.
        attempt_id: The running try (the claim's, or the last out-of-memory retry's).
        copy: The colorized master, as written.
        original: Its original.
        provenance: What will be recorded of the master.

    Returns:
        What was written; nothing if the try no longer holds the image (then
        ``mark_done()`` refuses it too).

    Raises:
        AccessFileFailed: If a file cannot be made, has no place of its own, or cannot
            be written (nothing partial is left behind).
        StorageUnavailable: If the store cannot be reached now (retry later).
        StorageMisconfigured: If the store refuses this worker.
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    claim, wanted = plan.claim, plan.wanted
    if not wanted.wanted:
        return WrittenAccessFiles(replaces=claim.attempt_number > 1)
    if wanted.invalid:
        raise AccessFileFailed(wanted.invalid)
    places = {
        spec.uri_beside(claim.output_uri): f"the access copy {spec}" for spec in wanted.derivatives
    }
    sidecar = sidecar_uri(claim.output_uri) if wanted.sidecars else None
    if sidecar is not None:
        places[sidecar] = "the sidecar"
    with transaction(sessions) as db:
        held = held_try(db, claim.image_id, attempt_id)
        if held is None:
            return WrittenAccessFiles(replaces=False)
        check_access_places(db, claim, plan.root, places)
        masters = recorded_outputs(db, claim.image_id)
    storage = storage_for(claim.output_uri)
    with _writing(claim.output_uri):
        derivatives = write_derivatives(
            storage,
            claim.output_uri,
            wanted.derivatives,
            copy,
            original,
            master_sha256=provenance.output_sha256,
            masters=masters,
        )
        if sidecar is not None:
            facts = SidecarFacts(
                image_id=claim.image_id,
                collection=plan.collection,
                source_uri=claim.source_uri,
                output_uri=claim.output_uri,
                upsample=copy.result.upsample,
                host=held.worker_host,
                started_at=held.started_at,
                untrained=provenance.checkpoint_sha256 == UNTRAINED_CHECKPOINT,
            )
            data = build_sidecar(facts, copy, original, provenance, derivatives)
            write_sidecar(storage, sidecar, data, masters=masters)
    return WrittenAccessFiles(tuple(derivatives), sidecar)


@contextmanager
def _writing(output_uri: str) -> Iterator[None]:
    """Say which output a storage failure was about; outages and refusals pass unchanged."""
    try:
        yield
    except (StorageUnavailable, StorageMisconfigured):
        raise
    except StorageError as exc:
        raise AccessFileFailed(
            f"the access copies or sidecar of {output_uri} could not be written: {exc}"
        ) from exc


def check_access_places(db: Session, claim: Claim, root: str, places: Mapping[str, str]) -> None:
    """Refuse places that are outside the collection's output, an original or an output.

    Args:
        db: The caller's session.
        claim: The running try.
        root: The collection's output location.
        places: Each place to write, with what goes there (for the reason).

    Raises:
        AccessFileFailed: If a place may not be written; nothing was written.
        DatabaseUnavailable: If the catalog cannot be reached.
    """
    output_root = parse_uri(root)
    roots = collection_roots(db)
    for uri, what in places.items():
        target = parse_uri(uri)
        if not contains(output_root, target) or target == output_root:
            raise AccessFileFailed(
                f"{what} would go to {uri}, outside the collection's output {root}; "
                "nothing was written"
            )
        resolved = os.path.realpath(target.key) if target.is_local else None
        candidates = {uri} if resolved is None else {uri, resolved}
        sources = collections_holding(((r.id, r.source) for r in roots), target, resolved=resolved)
        outputs = collections_holding(((r.id, r.output) for r in roots), target, resolved=resolved)
        originals = image_sources_among(db, sources, candidates)
        if uri == claim.source_uri or originals:
            raise AccessFileFailed(
                f"{what} would go to {uri}, which is an original of a collection; "
                "originals are never overwritten. Rename the original, or choose an "
                "output location that holds no originals"
            )
        taken = image_outputs_among(db, outputs, candidates)
        if taken:
            raise AccessFileFailed(
                f"{what} would go to {taken[0]}, the output of another image; rename one "
                "of the two sources, or ask for another derivative size"
            )
