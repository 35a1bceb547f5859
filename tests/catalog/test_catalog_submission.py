"""Submitting: collections are created once, scanned images registered idempotently."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from catalog_rows import read_collection, read_image, scanned
from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from catalog.errors import CollectionNotFound, ConflictingCollection, DuplicateOutput
from catalog.models import Collection, CollectionStatus, Image, ImageStatus
from catalog.registration import RegisterCounts, ScannedImage, register_images
from catalog.submission import create_or_get_collection
from catalog.transitions import cancel_collection


def _statuses(sessions: sessionmaker[Session]) -> dict[str, str]:
    with sessions.begin() as db:
        rows = db.execute(select(Image.source_uri, Image.status).order_by(Image.id))
        return {uri: status.value for uri, status in rows}


def _count(sessions: sessionmaker[Session]) -> int:
    with sessions.begin() as db:
        return int(db.scalar(select(func.count()).select_from(Image)) or 0)


# --------------------------------------------------------------------------- collections


def test_create_or_get_collection_creates_then_returns_the_same_collection(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as db:
        first, created_first = create_or_get_collection(db, "1920s", "s3://in", "s3://out")
    with sessions.begin() as db:
        again, created_again = create_or_get_collection(db, "1920s", "s3://in", "s3://out")

    assert (created_first, created_again) == (True, False)
    assert again.id == first.id


@pytest.mark.parametrize(
    ("source", "output"), [("s3://other", "s3://out"), ("s3://in", "s3://elsewhere")]
)
def test_resubmitting_a_name_with_another_source_or_output_is_refused(
    sessions: sessionmaker[Session], source: str, output: str
) -> None:
    with sessions.begin() as db:
        create_or_get_collection(db, "1920s", "s3://in", "s3://out")

    with pytest.raises(ConflictingCollection, match="1920s"), sessions.begin() as db:
        create_or_get_collection(db, "1920s", source, output)


def test_resubmitting_updates_the_settings(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as db:
        collection, _ = create_or_get_collection(db, "c", "in", "out", input_size=512)
    with sessions.begin() as db:
        create_or_get_collection(
            db, "c", "in", "out", input_size=1024, priority=5, not_before="22:30"
        )

    stored = read_collection(sessions, collection.id)
    assert (stored.input_size, stored.priority, stored.not_before) == (1024, 5, "22:30")


def test_resubmitting_a_cancelled_collection_resumes_it(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        cancel_collection(db, collection_id)
    with sessions.begin() as db:
        create_or_get_collection(db, "scans", "s3://scans", "s3://colour")

    assert read_collection(sessions, collection_id).status is CollectionStatus.ACTIVE
    assert set(_statuses(sessions).values()) == {"pending"}


@pytest.mark.parametrize("not_before", ["7:00", "24:00", "12:60", "noon"])
def test_not_before_must_be_a_24_hour_time(
    sessions: sessionmaker[Session], not_before: str
) -> None:
    with pytest.raises(ValueError, match="HH:MM"), sessions.begin() as db:
        create_or_get_collection(db, "c", "in", "out", not_before=not_before)


def test_concurrent_submits_of_one_new_name_create_one_collection(
    sessions: sessionmaker[Session],
) -> None:
    barrier = threading.Barrier(3)
    created: list[bool] = []
    errors: list[BaseException] = []

    def submit() -> None:
        try:
            barrier.wait()
            with sessions.begin() as db:
                created.append(create_or_get_collection(db, "race", "in", "out")[1])
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=submit) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert sorted(created) == [False, False, True]
    with sessions.begin() as db:
        assert db.scalar(select(func.count()).select_from(Collection)) == 1


# --------------------------------------------------------------------------- images


def test_register_adds_new_images_as_pending(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    with sessions.begin() as db:
        counts = register_images(db, collection_id, scanned(3))

    assert counts == RegisterCounts(new=3, changed=0, unchanged=0)
    assert list(_statuses(sessions).values()) == ["pending"] * 3


def test_registering_the_same_scan_twice_changes_nothing(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    with sessions.begin() as db:
        register_images(db, collection_id, scanned(4))
    before = _statuses(sessions)
    with sessions.begin() as db:
        counts = register_images(db, collection_id, scanned(4))

    assert counts == RegisterCounts(new=0, changed=0, unchanged=4)
    assert _statuses(sessions) == before
    assert _count(sessions) == 4


@pytest.mark.parametrize(
    "status",
    [ImageStatus.DONE, ImageStatus.FAILED, ImageStatus.CANCELLED, ImageStatus.SKIPPED],
)
def test_a_changed_checksum_sends_a_finished_image_back_to_pending(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
    status: ImageStatus,
) -> None:
    force_status(image_ids[0], status, last_error="old", output_sha256="abc", lost_attempts=2)
    rows = scanned(5)
    rows[0] = ScannedImage(**{**rows[0].__dict__, "checksum": "v2", "size": 7})

    with sessions.begin() as db:
        counts = register_images(db, collection_id, rows)

    assert counts == RegisterCounts(new=0, changed=1, unchanged=4)
    image = read_image(sessions, image_ids[0])
    assert image.status is ImageStatus.PENDING
    assert (image.source_checksum, image.source_size) == ("v2", 7)
    assert (image.last_error, image.output_sha256, image.lost_attempts) == (None, None, 0)
    assert _count(sessions) == 5


def test_a_changed_source_takes_its_new_output_name(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    rows = scanned(2)
    # The file was re-saved as PNG under the same name: its copy is now a .png.
    rows[0] = ScannedImage(
        **{**rows[0].__dict__, "checksum": "v2", "output_uri": "s3://colour/img/000000.tif.png"}
    )

    with sessions.begin() as db:
        counts = register_images(db, collection_id, rows)

    assert counts == RegisterCounts(new=0, changed=1, unchanged=1)
    assert read_image(sessions, image_ids[0]).output_uri == "s3://colour/img/000000.tif.png"


def test_a_changed_checksum_leaves_a_running_image_to_its_worker(
    sessions: sessionmaker[Session],
    collection_id: int,
    image_ids: list[int],
    force_status: Callable[..., None],
) -> None:
    force_status(image_ids[0], ImageStatus.RUNNING)

    with sessions.begin() as db:
        counts = register_images(db, collection_id, scanned(5, checksum="v2"))

    assert counts == RegisterCounts(new=0, changed=4, unchanged=1)
    assert read_image(sessions, image_ids[0]).status is ImageStatus.RUNNING
    assert read_image(sessions, image_ids[0]).source_checksum == "v1-0"


def test_register_adds_only_the_new_images_of_a_grown_scan(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    with sessions.begin() as db:
        counts = register_images(db, collection_id, scanned(8))

    assert counts == RegisterCounts(new=3, changed=0, unchanged=5)
    assert _count(sessions) == 8


def test_a_source_listed_twice_is_registered_once(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    rows = scanned(2)
    with sessions.begin() as db:
        counts = register_images(db, collection_id, [rows[0], rows[1], rows[0]])

    assert counts.total == 2
    assert _count(sessions) == 2


def test_two_scanned_sources_with_one_output_are_refused_before_writing(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    rows = scanned(2)
    clash = ScannedImage(**{**rows[1].__dict__, "output_uri": rows[0].output_uri})

    with pytest.raises(DuplicateOutput, match=rows[0].output_uri), sessions.begin() as db:
        register_images(db, collection_id, [rows[0], clash])
    assert _count(sessions) == 0


def test_a_new_source_whose_output_is_already_taken_is_refused(
    sessions: sessionmaker[Session], collection_id: int, image_ids: list[int]
) -> None:
    taken = scanned(1)[0].output_uri
    newcomer = ScannedImage("s3://scans/img/000000.png", "img/000000.png", taken, 1, "x")

    with pytest.raises(DuplicateOutput), sessions.begin() as db:
        register_images(db, collection_id, [newcomer])
    assert _count(sessions) == 5


def test_register_into_a_missing_collection_is_refused(sessions: sessionmaker[Session]) -> None:
    with pytest.raises(CollectionNotFound), sessions.begin() as db:
        register_images(db, 12345, scanned(1))


def test_register_with_nothing_scanned_reports_zeros(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    with sessions.begin() as db:
        assert register_images(db, collection_id, []) == RegisterCounts(0, 0, 0)


def test_register_spanning_several_statements_counts_every_row(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    with sessions.begin() as db:
        register_images(db, collection_id, scanned(25), chunk_rows=10)
    rows = scanned(30)
    rows[3] = ScannedImage(**{**rows[3].__dict__, "checksum": "changed"})
    with sessions.begin() as db:
        counts = register_images(db, collection_id, rows, chunk_rows=7)

    assert counts == RegisterCounts(new=5, changed=1, unchanged=24)
    assert _count(sessions) == 30


def test_new_images_reactivate_a_finished_collection(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    with sessions.begin() as db:
        collection = db.get(Collection, collection_id)
        assert collection is not None
        collection.status = CollectionStatus.DONE
    with sessions.begin() as db:
        register_images(db, collection_id, scanned(1))

    assert read_collection(sessions, collection_id).status is CollectionStatus.ACTIVE


def test_images_without_a_checksum_are_unchanged_when_scanned_again(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    rows = [ScannedImage(f"in/{n}.tif", f"{n}.tif", f"out/{n}.tif") for n in range(3)]
    with sessions.begin() as db:
        first = register_images(db, collection_id, rows)
    with sessions.begin() as db:
        again = register_images(db, collection_id, rows)

    assert (first.new, again) == (3, RegisterCounts(new=0, changed=0, unchanged=3))


@pytest.mark.slow
def test_register_handles_a_scan_of_a_hundred_thousand_objects(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    rows = scanned(100_000)
    with sessions.begin() as db:
        first = register_images(db, collection_id, rows)
    rows[99_999] = ScannedImage(**{**rows[99_999].__dict__, "checksum": "edited"})
    with sessions.begin() as db:
        again = register_images(db, collection_id, rows)

    assert first == RegisterCounts(new=100_000, changed=0, unchanged=0)
    assert again == RegisterCounts(new=0, changed=1, unchanged=99_999)
    assert _count(sessions) == 100_000


# --------------------------------------------------------------------------- skipped files


def _file(
    skipped: str | None, checksum: str = "c1", *, name: str = "a.jpg", code: str | None = None
) -> ScannedImage:
    return ScannedImage(
        source_uri=f"s3://in/{name}",
        relative_path=name,
        output_uri=f"s3://out/{name}",
        size=10,
        checksum=checksum,
        checksum_kind="etag",
        skipped=skipped,
        skip_code=code,
    )


def _register(sessions: sessionmaker[Session], collection_id: int, row: ScannedImage) -> None:
    with sessions.begin() as db:
        register_images(db, collection_id, [row])


def _state(sessions: sessionmaker[Session]) -> tuple[str, str | None]:
    with sessions.begin() as db:
        image = db.scalars(select(Image)).one()
        return image.status.value, image.last_error


def _code(sessions: sessionmaker[Session]) -> str | None:
    with sessions.begin() as db:
        return db.scalars(select(Image.failure_code)).one()


def test_a_skipped_file_is_registered_once_with_its_reason_and_follows_its_file(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    _register(sessions, collection_id, _file("empty file (0 bytes)", code="skip.empty"))
    _register(sessions, collection_id, _file("empty file (0 bytes)", code="skip.empty"))
    assert _state(sessions) == ("skipped", "empty file (0 bytes)")
    assert _code(sessions) == "skip.empty"
    _register(sessions, collection_id, _file("cannot be opened or read", code="skip.unreadable"))
    assert _state(sessions) == ("skipped", "cannot be opened or read")
    assert _code(sessions) == "skip.unreadable"

    # The same bytes are an image now (a scan rule changed, a link was made readable).
    _register(sessions, collection_id, _file(None))
    assert _state(sessions) == ("pending", None)
    assert _code(sessions) is None
    _register(sessions, collection_id, _file(None))
    assert _state(sessions) == ("pending", None)

    # An image whose file is no image any more: skipped, even with an unchanged checksum.
    # A reason without a code is recorded as unknown.
    _register(sessions, collection_id, _file("not an image: it is text"))
    assert _state(sessions) == ("skipped", "not an image: it is text")
    assert _code(sessions) == "unknown"
    assert _count(sessions) == 1


def test_a_file_the_worker_skipped_is_not_sent_back_by_an_unchanged_scan(
    sessions: sessionmaker[Session], collection_id: int
) -> None:
    _register(sessions, collection_id, _file(None))
    with sessions.begin() as db:
        db.execute(
            update(Image).values(
                status=ImageStatus.SKIPPED, last_error="already colour", attempts=1
            )
        )
    _register(sessions, collection_id, _file(None))
    assert _state(sessions) == ("skipped", "already colour")
    _register(sessions, collection_id, _file(None, "c2"))
    assert _state(sessions) == ("pending", None)
