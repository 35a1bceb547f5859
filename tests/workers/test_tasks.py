"""The colorize task: called as a plain function on a real app, and in a real worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from billiard.pool import EX_RECYCLE
from celery import Celery, Task
from celery.exceptions import Reject, SoftTimeLimitExceeded
from celery.utils.time import get_exponential_backoff_interval
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import (
    WAIT_S,
    ObservedStorage,
    OutOfMemoryAbove,
    StubNet,
    add_collection,
    attempts_of,
    read_image,
    stub_colorizer,
    submit_folder,
    write_corrupt_png,
    write_gray16_tiff,
    write_gray_png,
)

from catalog import (
    DatabaseUnavailable,
    ImageStatus,
    get_collection,
    list_images,
    make_sessionmaker,
    queue_pending,
    transaction,
)
from ddcolor.pipeline import Colorizer
from migrations import upgrade
from panchro.cli import cli
from storage import AccessDenied, InvalidImage, StorageUnavailable
from workers.app import create_app
from workers.errors import ImageFailed, WorkerSetupError
from workers.names import COLORIZE
from workers.runtime import WorkerConfig, WorkerRuntime
from workers.tasks import MAX_RETRIES, RETRYABLE, PoolProcess, register_tasks

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NODE = "cpu0@test"


@pytest.fixture
def app() -> Iterator[Celery]:
    """The project's app; the tests call its task directly and never reach a broker."""
    celery = create_app(broker_url="memory://")
    yield celery
    celery.close()


def _runtime(catalog_url: str, model: Any = None, **config: Any) -> WorkerRuntime:
    settings: dict[str, Any] = {
        "database_url": catalog_url,
        "untrained": True,
        "device": "cpu",
        "node_name": NODE,
        "read_ahead": False,
    }
    settings.update(config)
    return WorkerRuntime(
        WorkerConfig(**settings), colorizer_factory=lambda _: stub_colorizer(model)
    )


def _call(task: Task, image_id: int, **request: Any) -> None:
    """Run the task's body as a plain function, with a message's request (id, retries)."""
    task.push_request(**request)
    try:
        task.run(image_id)
    finally:
        task.pop_request()


class _Exits:
    """An injected ``os._exit``: records the status and returns."""

    def __init__(self) -> None:
        self.codes: list[int] = []
        self.called = threading.Event()

    def __call__(self, code: int) -> None:
        self.codes.append(code)
        self.called.set()


def test_colorize_task_retries_only_retryable_errors_with_backoff(
    app: Celery, catalog_url: str
) -> None:
    task = register_tasks(app, _runtime(catalog_url))

    assert app.tasks[COLORIZE] is task
    assert tuple(task.autoretry_for) == RETRYABLE
    assert {DatabaseUnavailable, StorageUnavailable} <= set(RETRYABLE)
    assert not any(issubclass(InvalidImage, error) for error in RETRYABLE)
    assert task.retry_backoff and task.retry_jitter
    assert task.max_retries == MAX_RETRIES
    assert ImageFailed in task.throws


def test_colorize_task_retries_within_a_minute_of_an_outage_ending_and_rides_out_minutes(
    app: Celery, catalog_url: str
) -> None:
    task = register_tasks(app, _runtime(catalog_url))
    waits = [
        get_exponential_backoff_interval(
            task.retry_backoff, retries, task.retry_backoff_max, full_jitter=False
        )
        for retries in range(task.max_retries)
    ]
    # No wait is longer than a minute: a store that came back is used again within 60 s.
    assert max(waits) <= 60
    # The retries span several minutes: a broker, catalog or S3 restart fails no image.
    assert sum(waits) >= 5 * 60


def test_colorize_task_takes_its_retry_backoff_from_the_worker_config(
    app: Celery, catalog_url: str
) -> None:
    task = register_tasks(app, _runtime(catalog_url, retry_backoff=2, retry_backoff_max=8))

    assert (task.retry_backoff, task.retry_backoff_max) == (2, 8)
    with pytest.raises(ValueError, match="retry_backoff"):
        WorkerConfig(database_url=catalog_url, untrained=True, retry_backoff=0)


def test_colorize_task_as_a_plain_function_colorizes_with_the_message_id(
    app: Celery, catalog_url: str, sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    task = register_tasks(app, _runtime(catalog_url))

    _call(task, ids["a.png"], id="m-1", hostname="cpu0@host")

    row = read_image(sessions, ids["a.png"])
    assert (row.status, row.task_id, row.worker_host) == (ImageStatus.DONE, "m-1", "cpu0@host")
    assert (output / "a.png").exists()


def test_collection_options_of_panchro_submit_reach_the_colorize_task(
    app: Celery,
    catalog_url: str,
    sessions: sessionmaker[Session],
    source: Path,
    output: Path,
    tiny_colorizer: Colorizer,
) -> None:
    write_gray_png(source / "a.png", size=(72, 40))
    options = ["--untrained", "--model", "ddcolor_paper_tiny", "--upsample", "nearest"]
    options += ["--output-format", "tif", "--size", "256", "--no-dispatch"]
    submitted = CliRunner().invoke(
        cli,
        ["--database-url", catalog_url, "submit", str(source), "--collection", "c"]
        + ["--output", str(output), *options],
    )
    assert submitted.exit_code == 0, submitted.output
    with transaction(sessions) as db:
        [image_id] = queue_pending(db, get_collection(db, "c").id, 10)
    runtime = WorkerRuntime(
        WorkerConfig(database_url=catalog_url, untrained=True, device="cpu", node_name=NODE),
        colorizer_factory=lambda _: tiny_colorizer,
    )

    _call(register_tasks(app, runtime), image_id, id="m-1", hostname=NODE)

    gray = np.asarray(PILImage.open(source / "a.png"))
    with PILImage.open(output / "a.png.tif") as written:
        assert written.format == "TIFF"
        colour = np.asarray(written.convert("RGB"))
    nearest = tiny_colorizer.colorize(gray, size=256, upsample="nearest").image
    guided = tiny_colorizer.colorize(gray, size=256, upsample="guided").image
    assert np.array_equal(colour, nearest) and not np.array_equal(colour, guided)


def test_colorize_task_raises_image_failed_after_recording_a_corrupt_image(
    app: Celery, catalog_url: str, sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_corrupt_png(source / "broken.png")
    ids = add_collection(sessions, source, output, ["broken.png"])
    task = register_tasks(app, _runtime(catalog_url))

    with pytest.raises(ImageFailed, match="truncated or corrupt"):
        _call(task, ids["broken.png"], id="m-1")

    assert read_image(sessions, ids["broken.png"]).status is ImageStatus.FAILED


class _PastSoftLimit(torch.nn.Module):
    """Raises SoftTimeLimitExceeded in its forward, as Celery's signal handler does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise SoftTimeLimitExceeded()


def test_an_image_past_the_soft_time_limit_is_failed_with_time_limit_as_reason(
    app: Celery, catalog_url: str, sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    task = register_tasks(app, _runtime(catalog_url, _PastSoftLimit()))

    with pytest.raises(
        ImageFailed,
        match="^time limit: the image was stopped at the soft time limit per image while",
    ):
        _call(task, ids["a.png"], id="m-1")

    row = read_image(sessions, ids["a.png"])
    assert (row.status, row.failure_code) == (ImageStatus.FAILED, "time_limit")


def _with_storage_down(
    app: Celery,
    catalog_url: str,
    sessions: sessionmaker[Session],
    source: Path,
    output: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Task, dict[str, int]]:
    """The task over a runtime whose every storage read fails as unavailable; one image."""
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    runtime = _runtime(catalog_url)
    down = ObservedStorage(unavailable=lambda uri: True)
    monkeypatch.setattr(runtime, "storage_for", lambda uri: down)
    task = register_tasks(app, runtime)
    return task, ids


def test_colorize_task_hands_the_image_back_and_raises_for_a_retry(
    app: Celery,
    catalog_url: str,
    sessions: sessionmaker[Session],
    source: Path,
    output: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, ids = _with_storage_down(app, catalog_url, sessions, source, output, monkeypatch)

    # Called directly, Celery's retry re-raises the error instead of sending a message.
    with pytest.raises(StorageUnavailable):
        _call(task, ids["a.png"], id="m-1", retries=0)

    assert read_image(sessions, ids["a.png"]).status is ImageStatus.QUEUED


def test_colorize_task_on_its_last_retry_records_that_it_gave_up(
    app: Celery,
    catalog_url: str,
    sessions: sessionmaker[Session],
    source: Path,
    output: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    task, ids = _with_storage_down(app, catalog_url, sessions, source, output, monkeypatch)

    with pytest.raises(ImageFailed, match=f"gave up after {MAX_RETRIES} retries"):
        _call(task, ids["a.png"], id="m-1", retries=MAX_RETRIES)

    row = read_image(sessions, ids["a.png"])
    assert row.status is ImageStatus.FAILED
    assert row.last_error is not None and "unreachable" in row.last_error
    assert row.failure_code == "storage.unavailable"


def test_pool_process_recycles_itself_when_idle_after_repeated_out_of_memory(
    app: Celery, catalog_url: str, sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "small.png")
    write_gray_png(source / "large.png")
    first = add_collection(sessions, source, output, ["small.png"], name="one", input_size=384)
    second = add_collection(sessions, source, output, ["large.png"], name="two", input_size=768)
    exits = _Exits()
    pool = PoolProcess(node_name=NODE, recycle_after_oom=3, exit_process=exits, recycle_grace=0)
    pool.started_in_pool(parent_pid=os.getpid())
    runtime = _runtime(catalog_url, OutOfMemoryAbove(StubNet(), limit=256))
    task = register_tasks(app, runtime, pool=pool)

    _call(task, first["small.png"], id="m-1")  # 384 -> 256: one step
    assert (pool.out_of_memory_steps, pool.recycle_requested) == (1, False)
    _call(task, second["large.png"], id="m-2")  # 768 -> 512 -> 384 -> 256: three more

    assert pool.recycle_requested
    assert exits.called.wait(WAIT_S), "the idle process did not exit"
    assert exits.codes == [EX_RECYCLE]
    assert read_image(sessions, second["large.png"]).status is ImageStatus.DONE


def test_task_reaching_a_process_due_for_recycling_leaves_its_image_unclaimed(
    app: Celery, catalog_url: str, sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    exits = _Exits()
    pool = PoolProcess(node_name=NODE, recycle_after_oom=3, exit_process=exits)
    pool.started_in_pool(parent_pid=os.getpid())
    pool.note_out_of_memory(3)
    task = register_tasks(app, _runtime(catalog_url), pool=pool)

    with pytest.raises(SystemExit):
        _call(task, ids["a.png"], id="m-1")

    assert exits.codes == [EX_RECYCLE]
    assert read_image(sessions, ids["a.png"]).status is ImageStatus.QUEUED
    assert attempts_of(sessions, ids["a.png"]) == []


def _unloadable_model_task(app: Celery, catalog_url: str) -> tuple[Task, PoolProcess, list[bool]]:
    """The task of a worker whose model cannot load; the list records each stop it asks."""
    stops: list[bool] = []
    pool = PoolProcess(node_name=NODE, stop_parent=lambda: stops.append(True))

    def broken(_: WorkerConfig) -> Any:
        raise WorkerSetupError("cannot load the model: no such file weights.pth")

    config = WorkerConfig(database_url=catalog_url, weights="weights.pth", node_name=NODE)
    task = register_tasks(app, WorkerRuntime(config, colorizer_factory=broken), pool=pool)
    return task, pool, stops


def test_unloadable_model_requeues_the_message_and_stops_the_worker(
    app: Celery, catalog_url: str, sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    task, pool, stops = _unloadable_model_task(app, catalog_url)
    pool.started_in_pool(parent_pid=os.getpid())

    with pytest.raises(Reject) as rejected:
        _call(task, ids["a.png"], id="m-1")

    assert rejected.value.requeue is True
    assert stops == [True]
    assert read_image(sessions, ids["a.png"]).status is ImageStatus.QUEUED
    assert attempts_of(sessions, ids["a.png"]) == []


# --------------------------------------------------------------------------- a real worker

#: Seconds the real worker gets to start and finish the images; a guard against hanging.
WORKER_DEADLINE_S = 180.0


def _start_worker(broker_url: str, database_url: str, log: Path) -> subprocess.Popen[bytes]:
    here = Path(__file__).resolve().parent
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(here.parents[1])]))
    with log.open("wb") as out:
        return subprocess.Popen(
            [
                sys.executable,
                str(here / "workers_helpers.py"),
                broker_url,
                database_url,
                "cpu0@e2e",
            ],
            cwd=here,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    try:  # the pool process shares the worker's session
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_real_worker_colorizes_a_collection_and_fails_only_the_corrupt_image(
    postgres_database_factory: Any, redis_url: str, source: Path, output: Path, tmp_path: Path
) -> None:
    database_url: str = postgres_database_factory()
    upgrade(database_url)
    sessions = make_sessionmaker(database_url)
    write_gray_png(source / "a.png")
    write_gray16_tiff(source / "b.tif")
    write_corrupt_png(source / "broken.png")
    summary = submit_folder(sessions, redis_url, "e2e", source, output)
    assert summary.dispatched == 3
    log = tmp_path / "worker.log"

    proc = _start_worker(redis_url, database_url, log)
    try:
        deadline = time.monotonic() + WORKER_DEADLINE_S
        while time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            with transaction(sessions) as db:
                images = {image.relative_path: image for image in list_images(db, "e2e")}
            if all(
                image.status in (ImageStatus.DONE, ImageStatus.FAILED) for image in images.values()
            ):
                break
            time.sleep(0.5)
    finally:
        _stop_worker(proc)
        sessions.kw["bind"].dispose()

    statuses = {path: image.status for path, image in images.items()}
    assert statuses == {
        "a.png": ImageStatus.DONE,
        "b.tif": ImageStatus.DONE,
        "broken.png": ImageStatus.FAILED,
    }, log.read_text()
    assert "truncated or corrupt" in (images["broken.png"].last_error or "")
    assert (output / "a.png").exists() and (output / "b.tif").exists()
    assert not (output / "broken.png").exists()
    assert {image.worker_host for image in images.values()} == {"cpu0@e2e"}
    assert all(image.task_id for image in images.values())


# --------------------------------------------------------------------------- warm-up


def test_warm_up_at_process_start_runs_the_network_once_at_the_default_size(
    catalog_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = OutOfMemoryAbove(StubNet(), limit=4096)  # records the sizes it is given
    runtime = _runtime(catalog_url, model)

    with caplog.at_level("INFO", logger="workers.runtime"):
        runtime.warm_up()

    assert model.sizes == [256]
    assert "warm-up pass" in caplog.text
    runtime.close()


def test_a_failed_warm_up_pass_is_logged_and_the_worker_still_starts(
    catalog_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    model = OutOfMemoryAbove(StubNet(), limit=0)  # out of memory at every size
    runtime = _runtime(catalog_url, model)

    with caplog.at_level("WARNING", logger="workers.runtime"):
        runtime.warm_up()

    assert model.sizes == [256]  # the floor of the ladder: nothing smaller is tried
    assert "warm-up pass failed" in caplog.text
    assert runtime.colorizer() is not None
    runtime.close()


# --------------------------------------------------------------------------- cannot work


def test_store_refusing_the_worker_requeues_the_message_and_stops_the_worker(
    app: Celery, catalog_url: str, sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_gray_png(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"])
    stops: list[bool] = []
    pool = PoolProcess(node_name=NODE, stop_parent=lambda: stops.append(True))
    pool.started_in_pool(parent_pid=os.getpid())
    runtime = _runtime(catalog_url)
    denied = AccessDenied("cannot read a.png: access denied to bucket 'b' (AccessDenied)")
    refusing = ObservedStorage(unavailable=lambda _: True, error=denied)
    runtime.storage_for = lambda uri: refusing  # type: ignore[method-assign]
    task = register_tasks(app, runtime, pool=pool)

    with pytest.raises(Reject) as rejected:
        _call(task, ids["a.png"], id="m-1")

    assert rejected.value.requeue is True
    assert stops == [True]
    assert pool.stop_reason is not None and "access denied" in pool.stop_reason
    image = read_image(sessions, ids["a.png"])
    assert (image.status, image.last_error) == (ImageStatus.QUEUED, None)


def test_a_model_that_cannot_load_at_process_start_stops_the_worker_at_once(
    app: Celery, catalog_url: str
) -> None:
    task, pool, stops = _unloadable_model_task(app, catalog_url)

    task.process_hooks.on_process_init()

    assert stops == [True]
    assert pool.stop_reason == "cannot load the model: no such file weights.pth"


def test_the_stop_reason_of_a_pool_process_reaches_the_worker_process() -> None:
    import multiprocessing

    pool = PoolProcess(node_name=NODE)
    child = multiprocessing.get_context("fork").Process(
        target=pool.stop_worker, args=("no usable AWS credentials",)
    )
    child.start()
    child.join(WAIT_S)

    assert child.exitcode == 0
    assert pool.stop_reason == "no usable AWS credentials"
