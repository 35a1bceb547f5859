"""A collection submitted again with another input size: done images are redone only when
asked, by the real ``process_image()``, each replacing its own earlier output; a touched
original alone redoes nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import attempts_of, read_image, sha256_of, stub_colorizer, write_gray_png

from catalog import AttemptOutcome, Image, ImageStatus, queue_pending, transaction
from scheduler import CollectionSettings, SubmitSummary, submit
from storage import LocalStorage
from workers.process import ProcessStatus, process_image

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NAMES = ("a.png", "b.png")


def _submit(
    sessions: sessionmaker[Session], source: Path, output: Path, **options: object
) -> SubmitSummary:
    settings = options.pop("settings", CollectionSettings(given=frozenset()))
    assert isinstance(settings, CollectionSettings)
    return submit(
        sessions,
        name="scans",
        source=source,
        output=output,
        storage=LocalStorage(),
        send=None,
        max_in_flight=10,
        settings=settings,
        redo_changed=bool(options.pop("redo", False)),
    )


def _work(sessions: sessionmaker[Session], collection_id: int) -> list[ProcessStatus]:
    """Queue what is pending and colorize it, as a dispatcher and a worker would."""
    colorizer = stub_colorizer()
    with transaction(sessions) as db:
        queue_pending(db, collection_id, limit=10)
        ids = db.scalars(select(Image.id).where(Image.status == ImageStatus.QUEUED)).all()
    return [
        process_image(
            image_id,
            sessions=sessions,
            storage_for=lambda uri: LocalStorage(),
            colorizer=colorizer,
            worker="cpu0@test",
        ).status
        for image_id in ids
    ]


def test_redo_changed_colorizes_done_images_again_over_their_own_outputs(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    for name in NAMES:
        write_gray_png(source / name, size=(64, 48))
    first = _submit(
        sessions, source, output, settings=CollectionSettings(input_size=256, upsample="nearest")
    )
    assert _work(sessions, first.collection_id) == [ProcessStatus.DONE] * 2
    written = {name: (output / name).stat().st_ino for name in NAMES}

    bigger = _submit(
        sessions,
        source,
        output,
        settings=CollectionSettings(input_size=288, given=frozenset({"size"})),
    )
    original = source / "a.png"
    stat = original.stat()
    os.utime(original, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    touched = _submit(sessions, source, output)

    assert (bigger.reprocessing.different, bigger.reprocessing.redone) == (2, 0)
    assert (touched.changed, touched.reprocessing.same_content) == (0, 1)
    assert _work(sessions, first.collection_id) == []
    assert {name: (output / name).stat().st_ino for name in NAMES} == written

    redo = _submit(sessions, source, output, redo=True)

    assert redo.reprocessing.redone == 2
    assert _work(sessions, first.collection_id) == [ProcessStatus.DONE] * 2
    assert sorted(path.name for path in output.iterdir()) == [".panchro", *NAMES]
    for image_id in (1, 2):
        row = read_image(sessions, image_id)
        path = output / row.relative_path
        assert path.stat().st_ino != written[row.relative_path]  # replaced, by rename
        assert (row.status, row.sizes_tried) == (ImageStatus.DONE, [288])
        assert row.output_sha256 == sha256_of(path)
        outcomes = [(a.outcome, a.input_size) for a in attempts_of(sessions, image_id)]
        assert outcomes == [(AttemptOutcome.DONE, 256), (AttemptOutcome.DONE, 288)]
    assert _submit(sessions, source, output).reprocessing.different == 0
