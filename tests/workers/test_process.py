"""process_image() on a real SQLite catalog, local folders and models."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from PIL import Image as PILImage
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import (
    NaNUnderAutocast,
    ObservedStorage,
    OutOfMemoryAbove,
    StubNet,
    add_collection,
    attempts_of,
    read_image,
    sha256_of,
    stub_colorizer,
    write_corrupt_png,
    write_gray16_tiff,
    write_gray_png,
)

from catalog import (
    MAX_LOST_ATTEMPTS,
    AttemptOutcome,
    Image,
    ImageStatus,
    claim_image,
    transaction,
)
from ddcolor.checkpoints import sha256_file
from ddcolor.pipeline import Colorizer, load_colorizer
from storage import AccessDenied, LocalStorage, StorageUnavailable
from workers.errors import CheckpointMismatch
from workers.process import Outcome, ProcessStatus, process_image
from workers.readahead import ReadAhead
from workers.weights import UNTRAINED_CHECKPOINT

pytestmark = pytest.mark.usefixtures("one_torch_thread")

WORKER = "cpu0@test"


def _process(
    sessions: sessionmaker[Session], image_id: int, colorizer: Colorizer, **options: Any
) -> Outcome:
    settings: dict[str, Any] = {
        "sessions": sessions,
        "storage_for": lambda uri: LocalStorage(),
        "colorizer": colorizer,
        "worker": WORKER,
    }
    settings.update(options)
    return process_image(image_id, **settings)


def _xmp(path: Path) -> str:
    with PILImage.open(path) as image:
        info = image.info
        packet = info.get("XML:com.adobe.xmp") or info.get("xmp") or image.getxmp()
    return packet.decode() if isinstance(packet, bytes) else str(packet)


def test_process_image_with_the_tiny_model_records_done_with_complete_provenance(
    sessions: sessionmaker[Session], source: Path, output: Path, tiny_colorizer: Colorizer
) -> None:
    original = write_gray_png(source / "album" / "p001.png", size=(56, 40))
    before = original.read_bytes()
    ids = add_collection(sessions, source, output, ["album/p001.png"])

    outcome = _process(
        sessions, ids["album/p001.png"], tiny_colorizer, untrained=True, task_id="m-1"
    )

    assert outcome.status is ProcessStatus.DONE
    written = output / "album" / "p001.png"
    with PILImage.open(written) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "RGB", (56, 40))
    assert original.read_bytes() == before
    row = read_image(sessions, ids["album/p001.png"])
    assert row.status is ImageStatus.DONE
    assert row.last_error is None
    assert (row.output_sha256, row.output_size) == (sha256_of(written), written.stat().st_size)
    assert row.source_sha256 == sha256_of(original)
    assert (row.input_size, row.sizes_tried, row.precision) == (256, [256], "fp32")
    assert row.backend == "cpu" and row.device is not None and row.device.startswith("cpu")
    assert (row.worker_host, row.task_id) == (WORKER, "m-1")
    assert (row.model_name, row.checkpoint_sha256) == ("ddcolor_paper_tiny", UNTRAINED_CHECKPOINT)
    assert (row.width, row.height, row.mode, row.bit_depth) == (56, 40, "L", 8)
    assert row.duration_s is not None and row.finished_at is not None
    [attempt] = attempts_of(sessions, row.id)
    assert (attempt.outcome, attempt.input_size, attempt.precision) == (
        AttemptOutcome.DONE,
        256,
        "fp32",
    )
    assert attempt.worker == WORKER and attempt.finished_at is not None
    xmp = _xmp(written)
    assert "UNTRAINED" in xmp and "ddcolor_paper_tiny" in xmp and "256" in xmp


def test_process_image_upsamples_colour_as_the_collection_asks(
    sessions: sessionmaker[Session], source: Path, output: Path, tiny_colorizer: Colorizer
) -> None:
    write_gray_png(source / "p.png", size=(300, 200))
    asked: list[str | None] = []

    class Recording(Colorizer):
        def colorize(self, image: Any, *, upsample: Any = None, **options: Any) -> Any:
            asked.append(upsample)
            return super().colorize(image, upsample=upsample, **options)

    recording = Recording(
        tiny_colorizer.model,
        device="cpu",
        precision="fp32",
        size=256,
        upsample="guided",
        model_name="ddcolor_paper_tiny",
    )
    ids = add_collection(sessions, source, output, ["p.png"], upsample="nearest")

    outcome = _process(sessions, ids["p.png"], recording, untrained=True)

    assert outcome.status is ProcessStatus.DONE
    assert asked == ["nearest"]


def test_process_image_records_the_checkpoint_sha256_and_keeps_16_bit_tiff(
    sessions: sessionmaker[Session], source: Path, output: Path, checkpoint_file: Path
) -> None:
    colorizer = load_colorizer(
        checkpoint_file, device="cpu", precision="fp32", size=256, model="ddcolor_paper_tiny"
    )
    write_gray16_tiff(source / "plate.tif", size=(48, 36))
    ids = add_collection(sessions, source, output, ["plate.tif"])

    outcome = _process(sessions, ids["plate.tif"], colorizer)

    assert outcome.status is ProcessStatus.DONE
    row = read_image(sessions, ids["plate.tif"])
    assert row.checkpoint_sha256 == sha256_file(checkpoint_file)
    assert row.model_name == "ddcolor_paper_tiny"
    assert row.bit_depth == 16
    samples = tifffile.imread(output / "plate.tif")  # Pillow reads 16-bit RGB as 8-bit
    assert samples.dtype == np.uint16 and samples.shape == (36, 48, 3)
    assert samples.max() > 255
    assert sha256_file(checkpoint_file) in _xmp(output / "plate.tif")


def test_corrupt_original_fails_with_a_reason_and_leaves_no_output(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    original = write_corrupt_png(source / "broken.png")
    before = original.read_bytes()
    ids = add_collection(sessions, source, output, ["broken.png"])

    outcome = _process(sessions, ids["broken.png"], stub_colorizer())

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, ids["broken.png"])
    assert row.status is ImageStatus.FAILED
    assert row.last_error is not None and "truncated or corrupt" in row.last_error
    assert row.failure_code == "decode.corrupt"
    [attempt] = attempts_of(sessions, row.id)
    assert attempt.outcome is AttemptOutcome.FAILED and attempt.error == row.last_error
    assert attempt.finished_at is not None and attempt.input_size is None
    assert original.read_bytes() == before
    assert not output.exists() or not any(output.iterdir())


def test_out_of_memory_above_a_size_records_each_step_then_done_at_the_smaller_size(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"], input_size=384)
    model = OutOfMemoryAbove(StubNet(), limit=256)

    outcome = _process(sessions, ids["a.png"], stub_colorizer(model))

    assert outcome.status is ProcessStatus.DONE
    assert outcome.out_of_memory_steps == 1
    assert model.sizes == [384, 256]
    row = read_image(sessions, ids["a.png"])
    assert (row.status, row.input_size, row.sizes_tried) == (ImageStatus.DONE, 256, [384, 256])
    assert row.attempts == 2
    steps = [(a.number, a.outcome, a.input_size) for a in attempts_of(sessions, row.id)]
    assert steps == [(1, AttemptOutcome.OOM_RETRY, 384), (2, AttemptOutcome.DONE, 256)]
    assert (output / "a.png").exists()


def test_out_of_memory_at_the_smallest_size_fails_with_a_reason_that_says_so(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"], input_size=384)

    outcome = _process(sessions, ids["a.png"], stub_colorizer(OutOfMemoryAbove(StubNet(), 0)))

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, ids["a.png"])
    assert row.status is ImageStatus.FAILED
    assert row.last_error is not None and "out of memory" in row.last_error
    assert "384, 256" in row.last_error
    assert row.failure_code == "oom.floor"
    steps = [(a.outcome, a.input_size) for a in attempts_of(sessions, row.id)]
    assert steps == [(AttemptOutcome.OOM_RETRY, 384), (AttemptOutcome.FAILED, 256)]
    assert not (output / "a.png").exists()


def test_unreachable_store_propagates_and_hands_the_image_back_for_the_retry(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    down = ObservedStorage(unavailable=lambda uri: True)

    with pytest.raises(StorageUnavailable):
        _process(sessions, ids["a.png"], stub_colorizer(), storage_for=lambda uri: down)

    row = read_image(sessions, ids["a.png"])
    assert (row.status, row.lost_attempts) == (ImageStatus.QUEUED, 0)
    [first] = attempts_of(sessions, row.id)
    assert first.outcome is AttemptOutcome.FAILED and "will retry" in (first.error or "")

    retried = _process(sessions, ids["a.png"], stub_colorizer(), task_id="m-1")

    assert retried.status is ProcessStatus.DONE
    outcomes = [a.outcome for a in attempts_of(sessions, row.id)]
    assert outcomes == [AttemptOutcome.FAILED, AttemptOutcome.DONE]


def test_last_retry_of_an_unreachable_store_fails_the_image_with_the_retry_count(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    down = ObservedStorage(unavailable=lambda uri: True)

    outcome = _process(
        sessions,
        ids["a.png"],
        stub_colorizer(),
        storage_for=lambda uri: down,
        retries=5,
        give_up=True,
    )

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, ids["a.png"])
    assert row.status is ImageStatus.FAILED
    assert row.last_error is not None and row.last_error.startswith("gave up after 5 retries")
    assert row.failure_code == "storage.unavailable"


def test_redelivered_message_for_a_done_image_does_nothing(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    first = _process(sessions, ids["a.png"], stub_colorizer(), task_id="m-1")
    assert first.status is ProcessStatus.DONE
    written = output / "a.png"
    stamp = (written.stat().st_mtime_ns, sha256_of(written))
    model = OutOfMemoryAbove(StubNet(), limit=4096)

    again = _process(sessions, ids["a.png"], stub_colorizer(model), task_id="m-1")

    assert again.status is ProcessStatus.NOT_CLAIMED
    assert model.sizes == []
    assert len(attempts_of(sessions, ids["a.png"])) == 1
    assert (written.stat().st_mtime_ns, sha256_of(written)) == stamp


def test_redelivery_after_a_dead_worker_closes_the_stale_attempt_as_lost_and_redoes_it(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    with transaction(sessions) as db:  # a worker that claimed the image, then died
        assert claim_image(db, ids["a.png"], worker="dead@host", task_id="m-1") is not None

    outcome = _process(sessions, ids["a.png"], stub_colorizer(), task_id="m-1")

    assert outcome.status is ProcessStatus.DONE
    row = read_image(sessions, ids["a.png"])
    assert (row.status, row.lost_attempts, row.worker_host) == (ImageStatus.DONE, 1, WORKER)
    trail = [(a.worker, a.outcome) for a in attempts_of(sessions, row.id)]
    assert trail == [("dead@host", AttemptOutcome.LOST), (WORKER, AttemptOutcome.DONE)]


def test_redelivery_at_the_lost_cap_fails_the_image_instead(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    with transaction(sessions) as db:
        assert claim_image(db, ids["a.png"], worker="dead@host", task_id="m-1") is not None
        db.execute(
            update(Image)
            .where(Image.id == ids["a.png"])
            .values(lost_attempts=MAX_LOST_ATTEMPTS - 1)
        )

    outcome = _process(sessions, ids["a.png"], stub_colorizer(), task_id="m-1")

    assert outcome.status is ProcessStatus.NOT_CLAIMED
    row = read_image(sessions, ids["a.png"])
    assert row.status is ImageStatus.FAILED
    assert row.last_error is not None and "worker died" in row.last_error
    assert row.failure_code == "worker.lost"
    assert not (output / "a.png").exists()


def test_non_finite_fp16_result_is_redone_in_fp32_and_fp32_is_recorded(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    colorizer = stub_colorizer(NaNUnderAutocast(StubNet()), precision="fp16")

    outcome = _process(sessions, ids["a.png"], colorizer)

    assert outcome.status is ProcessStatus.DONE
    row = read_image(sessions, ids["a.png"])
    assert row.precision == "fp32"
    [attempt] = attempts_of(sessions, row.id)
    assert attempt.precision == "fp32"
    assert "fp32" in _xmp(output / "a.png")


def test_output_that_is_the_original_is_refused_and_the_original_kept(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    original = write_gray_png(source / "a.png")
    before = original.read_bytes()
    ids = add_collection(sessions, source, output, ["a.png"], outputs={"a.png": original})

    outcome = _process(sessions, ids["a.png"], stub_colorizer())

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, ids["a.png"])
    assert row.last_error is not None and "is the original itself" in row.last_error
    assert row.failure_code == "output.unsafe"
    assert original.read_bytes() == before


def test_collection_submitted_for_other_weights_is_handed_back_not_failed(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"], checkpoint_sha256="ab" * 32)

    with pytest.raises(CheckpointMismatch) as raised:
        _process(sessions, ids["a.png"], stub_colorizer(), untrained=True)

    assert "abababababab" in str(raised.value) and "random weights" in str(raised.value)
    row = read_image(sessions, ids["a.png"])
    assert row.status is ImageStatus.QUEUED and row.last_error is None
    [attempt] = attempts_of(sessions, ids["a.png"])
    assert attempt.outcome is AttemptOutcome.FAILED and attempt.finished_at is not None
    assert "handed back" in (attempt.error or "")
    assert not (output / "a.png").exists()


def test_collection_submitted_untrained_or_for_another_model_is_left_to_a_matching_worker(
    sessions: sessionmaker[Session], source: Path, output: Path, checkpoint_file: Path
) -> None:
    trained = load_colorizer(
        checkpoint_file, device="cpu", precision="fp32", size=256, model="ddcolor_paper_tiny"
    )
    write_gray_png(source / "a.png")
    write_gray_png(source / "b.png")
    untrained = add_collection(sessions, source, output, ["a.png"], name="u", untrained=True)
    other = add_collection(sessions, source, output, ["b.png"], name="m", model_name="x_model")

    with pytest.raises(CheckpointMismatch, match="untrained random weights"):
        _process(sessions, untrained["a.png"], trained)
    with pytest.raises(CheckpointMismatch, match="for model x_model, but this worker runs stub"):
        _process(sessions, other["b.png"], stub_colorizer(), untrained=True)

    for image_id in (untrained["a.png"], other["b.png"]):
        assert read_image(sessions, image_id).status is ImageStatus.QUEUED
    assert not output.exists() or not any(output.iterdir())


def test_store_refusing_the_credentials_hands_the_image_back_not_failed(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    denied = AccessDenied("cannot read a.png: access denied to bucket 'b' (InvalidAccessKeyId)")

    with pytest.raises(AccessDenied):
        _process(
            sessions,
            ids["a.png"],
            stub_colorizer(),
            storage_for=lambda uri: ObservedStorage(unavailable=lambda _: True, error=denied),
        )

    row = read_image(sessions, ids["a.png"])
    assert row.status is ImageStatus.QUEUED and row.last_error is None
    [attempt] = attempts_of(sessions, ids["a.png"])
    assert attempt.outcome is AttemptOutcome.FAILED
    assert "InvalidAccessKeyId" in (attempt.error or "")


def test_read_ahead_guesses_the_next_queued_image_after_each_claim(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    names = ["a.png", "b.png"]
    for name in names:
        write_gray_png(source / name)
    ids = add_collection(sessions, source, output, names)
    read_ahead = ReadAhead(lambda uri: LocalStorage(), guess_next=True)
    try:
        first = _process(sessions, ids["a.png"], stub_colorizer(), read_ahead=read_ahead)
        second = _process(sessions, ids["b.png"], stub_colorizer(), read_ahead=read_ahead)
    finally:
        read_ahead.close()

    assert (first.read_ahead, second.read_ahead) == (False, True)
    assert second.status is ProcessStatus.DONE
    assert read_ahead.hits == 1


def test_read_ahead_is_ignored_when_the_source_changed_since_it_was_read(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    read_ahead = ReadAhead(lambda uri: LocalStorage())
    try:
        with transaction(sessions) as db:
            read_ahead.prefetch_in(db, [ids["a.png"]])
        with transaction(sessions) as db:
            db.execute(
                update(Image).where(Image.id == ids["a.png"]).values(source_checksum="changed")
            )
        outcome = _process(sessions, ids["a.png"], stub_colorizer(), read_ahead=read_ahead)
    finally:
        read_ahead.close()

    assert outcome.status is ProcessStatus.DONE
    assert outcome.read_ahead is False
    assert (read_ahead.hits, read_ahead.misses) == (0, 1)


def test_read_ahead_waiting_behind_a_hanging_read_is_not_waited_for(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    names = ["stuck.png", "next.png"]
    for name in names:
        write_gray_png(source / name)
    ids = add_collection(sessions, source, output, names)
    released = threading.Event()

    def hang_on_stuck(where: str, thread: str) -> None:
        # Bounded: without the fix the test fails after this, instead of hanging.
        if where.endswith("stuck.png"):
            released.wait(10.0)

    storage = ObservedStorage(on_read=hang_on_stuck)
    read_ahead = ReadAhead(lambda uri: storage)
    try:
        with transaction(sessions) as db:
            read_ahead.prefetch_in(db, [ids["stuck.png"], ids["next.png"]])
        outcome = _process(sessions, ids["next.png"], stub_colorizer(), read_ahead=read_ahead)
        stuck_still_reading = not released.is_set()
    finally:
        released.set()
        read_ahead.close()

    assert stuck_still_reading
    assert outcome.status is ProcessStatus.DONE
    assert outcome.read_ahead is False
    assert (read_ahead.hits, read_ahead.misses) == (0, 1)
