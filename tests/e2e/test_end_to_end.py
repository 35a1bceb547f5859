"""End to end: scans in S3, ``panchro submit``, Redis, two CPU workers, colour copies in S3.

Real PostgreSQL, real Redis, moto's S3 server over HTTP, and the ``panchro`` programs as
real processes, started the way an operator starts them: ``panchro db upgrade``, ``panchro
submit``, ``panchro workers --cpu 2`` and ``panchro status``. The pipeline runs once, in the
``pipeline`` fixture, until nothing is left to do; the workers are then stopped with
SIGTERM. Each test checks one promise against what the run left in the catalog and in the
bucket. The model is the tiny DDColor with random weights, from a checkpoint file.
"""

from __future__ import annotations

import hashlib
import json
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from e2e_helpers import (
    Launcher,
    OutputImage,
    Sample,
    broken_samples,
    good_samples,
    is_colour,
    panchro_argv,
    read_output,
    run_command,
    skipped_samples,
    wait_until,
)
from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from catalog import (
    OPEN_STATUSES,
    Attempt,
    AttemptOutcome,
    Collection,
    Image,
    ImageStatus,
    make_engine,
    make_sessionmaker,
)
from ddcolor import resolve_precision
from storage.skips import SKIP_CODES
from tests.panchro.metrics_helpers import Scrape, scrape, serve

pytestmark = [pytest.mark.slow, pytest.mark.s3]

#: Name of the collection.
COLLECTION = "e2e"
#: Key prefix of the originals in the bucket.
SOURCE_PREFIX = "scans"
#: Key prefix of the colour copies in the bucket.
OUTPUT_PREFIX = "colour"
#: Model input size of the collection, in pixels: the smallest the network takes.
INPUT_SIZE = 256
#: CPU workers started by ``panchro workers --cpu``.
WORKERS = 2
#: Most tasks in the broker at once: above the number of images, so that ``panchro submit``
#: sends every task and no ``panchro scheduler`` is needed.
MAX_IN_FLIGHT = 64
#: Seconds the workers get to colorize everything (about a minute on two shared cores);
#: a guard against hanging, not a measurement.
PIPELINE_TIMEOUT_S = 300.0
#: Seconds the workers' processes get to disappear once the launcher has exited.
GONE_TIMEOUT_S = 30.0


@dataclass
class PipelineRun:
    """What one run of the whole pipeline left behind.

    Attributes:
        bucket: The bucket holding originals and outputs.
        samples: Every object uploaded below the source prefix.
        checkpoint_sha256: SHA-256 of the synthetic checkpoint file.
        precision: What the workers' ``auto`` precision is on this CPU (bf16 where the
            CPU computes it natively, else fp32).
        submit_output: What ``panchro submit`` printed.
        uploaded_etags: ETag of each uploaded key.
        objects: ETag and bytes of every key in the bucket after the run.
        multipart_uploads: Multipart uploads left unfinished in the bucket.
        collection: The collection's row.
        images: Image rows by relative path.
        attempts: Attempt rows by relative path, oldest first.
        nodes: Node names of the workers the launcher started.
        stop_code: Exit code of ``panchro workers`` after SIGTERM.
        all_gone: Whether the launcher, workers and pool processes had all exited.
        log: Everything the launcher and its workers logged.
        status: ``panchro status --json`` after the run.
        metrics: A scrape of ``panchro metrics`` once every image had finished, the
            workers still running.
    """

    bucket: str
    samples: list[Sample]
    checkpoint_sha256: str
    precision: str
    submit_output: str
    uploaded_etags: dict[str, str]
    objects: dict[str, tuple[str, bytes]]
    multipart_uploads: list[Any]
    collection: Collection
    images: dict[str, Image]
    skipped_rows: dict[str, Image]
    attempts: dict[str, list[Attempt]]
    nodes: set[str]
    stop_code: int
    all_gone: bool
    log: str
    status: dict[str, Any]
    metrics: Scrape

    @property
    def good(self) -> list[Sample]:
        """The samples that must be colorized."""
        return [sample for sample in self.samples if sample.good]

    @property
    def broken(self) -> list[Sample]:
        """The samples registered as images that must fail."""
        return [sample for sample in self.samples if sample.broken]

    @property
    def skipped(self) -> list[Sample]:
        """The samples the scan must pass over."""
        return [sample for sample in self.samples if sample.skip_reason is not None]

    def output(self, sample: Sample) -> OutputImage:
        """The decoded colour copy of a good sample."""
        etag_and_bytes = self.objects.get(f"{OUTPUT_PREFIX}/{sample.relative}")
        assert etag_and_bytes is not None, f"no output for {sample.relative}"
        return read_output(etag_and_bytes[1])


def _upload(client: Any, bucket: str, samples: list[Sample]) -> dict[str, str]:
    etags = {}
    for sample in samples:
        key = f"{SOURCE_PREFIX}/{sample.relative}"
        etags[key] = client.put_object(Bucket=bucket, Key=key, Body=sample.data)["ETag"]
    return etags


def _bucket_contents(client: Any, bucket: str) -> dict[str, tuple[str, bytes]]:
    contents = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", []):
            body = client.get_object(Bucket=bucket, Key=entry["Key"])["Body"].read()
            contents[entry["Key"]] = (entry["ETag"], body)
    return contents


def _catalog_rows(
    database_url: str,
) -> tuple[Collection, dict[str, Image], dict[str, Image], dict[str, list[Attempt]]]:
    engine = make_engine(database_url)
    try:
        with Session(engine) as db:
            collection = db.scalars(select(Collection).where(Collection.name == COLLECTION)).one()
            every = db.scalars(select(Image).where(Image.collection_id == collection.id)).all()
            # Files the scan passed over have rows too, and never reach a worker.
            skipped = {i.relative_path: i for i in every if i.status is ImageStatus.SKIPPED}
            rows = [image for image in every if image.status is not ImageStatus.SKIPPED]
            images = {image.relative_path: image for image in rows}
            by_id = {image.id: image.relative_path for image in rows}
            attempts: dict[str, list[Attempt]] = {path: [] for path in images}
            query = select(Attempt).where(Attempt.image_id.in_(by_id)).order_by(Attempt.number)
            for attempt in db.scalars(query):
                attempts[by_id[attempt.image_id]].append(attempt)
        return collection, images, skipped, attempts
    finally:
        engine.dispose()


def _open_images(engine: Engine) -> int:
    with engine.connect() as conn:
        query = select(func.count()).where(Image.status.in_(OPEN_STATUSES))
        return int(conn.scalar(query) or 0)


@pytest.fixture(scope="module")
def pipeline(
    postgres_database_factory: Callable[[], str],
    e2e_redis_url: str,
    s3_endpoint_url: str,
    s3_client: Any,
    e2e_bucket: str,
    e2e_environment: dict[str, str],
    synthetic_checkpoint: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[PipelineRun]:
    """Run the whole pipeline once: upload, migrate, submit, colorize, stop the workers."""
    work = tmp_path_factory.mktemp("e2e")
    database_url = postgres_database_factory()
    # The workers warm up at the collection's size, not at the default 512 px (4 times
    # the work, for nothing this test looks at).
    env = {
        **e2e_environment,
        "PANCHRO_MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
        "PANCHRO_WORKER_SIZE": str(INPUT_SIZE),
    }
    samples = good_samples() + broken_samples() + skipped_samples()
    uploaded = _upload(s3_client, e2e_bucket, samples)

    def panchro(*args: str) -> list[str]:
        return panchro_argv(
            *args,
            database_url=database_url,
            broker_url=e2e_redis_url,
            s3_endpoint_url=s3_endpoint_url,
        )

    run_command(panchro("db", "upgrade"), env, work)
    submitted = run_command(
        panchro(
            "submit",
            f"s3://{e2e_bucket}/{SOURCE_PREFIX}",
            "--collection",
            COLLECTION,
            "--output",
            f"s3://{e2e_bucket}/{OUTPUT_PREFIX}",
            "--size",
            str(INPUT_SIZE),
            "--weights",
            str(synthetic_checkpoint),
        ),
        env,
        work,
    )
    launcher = Launcher(
        panchro("workers", "--cpu", str(WORKERS), "--weights", str(synthetic_checkpoint)),
        env,
        work / "workers.log",
    )
    engine = make_engine(database_url)
    try:

        def nothing_left() -> bool:
            launcher.assert_running()
            return _open_images(engine) == 0

        wait_until(nothing_left, PIPELINE_TIMEOUT_S, "every image to be done or failed")
        nodes = set(launcher.worker_pids())
        with serve(make_sessionmaker(engine), e2e_redis_url, inspect_timeout=0.5) as url:
            metrics = scrape(url)
        stop_code = launcher.stop()
        try:
            wait_until(launcher.all_gone, GONE_TIMEOUT_S, "the worker processes to exit")
            all_gone = True
        except AssertionError:
            all_gone = False
        status = run_command(panchro("status", COLLECTION, "--json"), env, work)
        collection, images, skipped_rows, attempts = _catalog_rows(database_url)
        yield PipelineRun(
            bucket=e2e_bucket,
            samples=samples,
            checkpoint_sha256=hashlib.sha256(synthetic_checkpoint.read_bytes()).hexdigest(),
            precision=resolve_precision("auto", "cpu"),
            submit_output=submitted.stdout,
            uploaded_etags=uploaded,
            objects=_bucket_contents(s3_client, e2e_bucket),
            multipart_uploads=s3_client.list_multipart_uploads(Bucket=e2e_bucket).get(
                "Uploads", []
            ),
            collection=collection,
            images=images,
            skipped_rows=skipped_rows,
            attempts=attempts,
            nodes=nodes,
            stop_code=stop_code,
            all_gone=all_gone,
            log=launcher.text(),
            status=json.loads(status.stdout),
            metrics=metrics,
        )
    finally:
        launcher.kill()
        engine.dispose()


def _expected_nodes() -> set[str]:
    host = socket.gethostname()
    return {f"cpu{index}@{host}" for index in range(WORKERS)}


# --------------------------------------------------------------------------- submission


def test_submit_registers_every_image_and_sends_one_task_each(pipeline: PipelineRun) -> None:
    registered = {sample.relative for sample in pipeline.good + pipeline.broken}

    assert set(pipeline.images) == registered
    assert f"{len(registered)} sent to the workers" in pipeline.submit_output


def test_submit_skips_empty_files_non_images_and_hidden_files(pipeline: PipelineRun) -> None:
    for sample in pipeline.skipped:
        assert sample.relative not in pipeline.images
        if sample.skip_reason == "hidden":
            assert sample.relative not in pipeline.skipped_rows
            assert "ignored   1 not part of the collection: 1 hidden" in pipeline.submit_output
        else:
            row = pipeline.skipped_rows[sample.relative]
            assert row.last_error and f"    {sample.relative}: {row.last_error}" in (
                pipeline.submit_output
            )
            assert row.failure_code == SKIP_CODES[sample.skip_reason], sample.relative


def test_collection_records_the_model_checkpoint_and_input_size(pipeline: PipelineRun) -> None:
    collection = pipeline.collection

    assert collection.source == f"s3://{pipeline.bucket}/{SOURCE_PREFIX}"
    assert collection.output == f"s3://{pipeline.bucket}/{OUTPUT_PREFIX}"
    assert collection.model_name == "ddcolor_paper_tiny"
    assert collection.checkpoint_sha256 == pipeline.checkpoint_sha256
    assert collection.input_size == INPUT_SIZE
    assert collection.untrained is False


# --------------------------------------------------------------------------- outputs


def test_every_good_image_is_done_with_a_colour_copy_of_the_same_size(
    pipeline: PipelineRun,
) -> None:
    for sample in pipeline.good:
        image = pipeline.images[sample.relative]
        assert image.status == ImageStatus.DONE, (sample.relative, image.last_error)
        assert image.last_error is None
        output = pipeline.output(sample)
        assert output.format == sample.output_format, sample.relative
        assert (output.width, output.height) == (sample.width, sample.height), sample.relative
        assert is_colour(output), sample.relative


def test_sixteen_bit_originals_give_sixteen_bit_copies(pipeline: PipelineRun) -> None:
    depths = {(sample.output_format, sample.bit_depth) for sample in pipeline.good}
    assert {("PNG", 16), ("TIFF", 16), ("PNG", 8), ("TIFF", 8)} <= depths

    for sample in pipeline.good:
        output = pipeline.output(sample)
        assert output.bit_depth == sample.bit_depth, sample.relative
        if output.format == "PNG":
            assert output.header_bit_depth == sample.bit_depth, sample.relative


def test_alpha_channels_are_kept_exactly(pipeline: PipelineRun) -> None:
    with_alpha = [sample for sample in pipeline.good if sample.alpha is not None]
    assert {sample.output_format for sample in with_alpha} == {"PNG", "WEBP"}

    for sample in pipeline.good:
        alpha = pipeline.output(sample).alpha
        if sample.alpha is None:
            assert alpha is None, sample.relative
        else:
            assert alpha is not None, sample.relative
            assert np.array_equal(alpha, sample.alpha), sample.relative


def test_corrupt_images_fail_with_a_reason_naming_the_file_and_the_problem(
    pipeline: PipelineRun,
) -> None:
    for sample in pipeline.broken:
        image = pipeline.images[sample.relative]
        assert image.status == ImageStatus.FAILED, sample.relative
        reason = image.last_error or ""
        assert sample.relative in reason, reason
        assert sample.problem is not None and sample.problem in reason, reason
        assert image.failure_code == sample.code, sample.relative
        assert f"{OUTPUT_PREFIX}/{sample.relative}" not in pipeline.objects
        assert image.output_sha256 is None


def test_originals_are_left_untouched(pipeline: PipelineRun) -> None:
    for sample in pipeline.samples:
        key = f"{SOURCE_PREFIX}/{sample.relative}"
        etag, data = pipeline.objects[key]
        assert etag == pipeline.uploaded_etags[key], key
        assert hashlib.sha256(data).hexdigest() == sample.sha256, key


def test_nothing_but_the_colour_copies_and_their_thumbnails_is_written(
    pipeline: PipelineRun,
) -> None:
    outputs = {f"{OUTPUT_PREFIX}/{sample.relative}" for sample in pipeline.good}
    # s3://bucket/key -> key: the thumbnail pair each done image recorded, for reports.
    thumbnails = {
        uri.split("/", 3)[3]
        for image in pipeline.images.values()
        for uri in (image.source_thumb_uri, image.output_thumb_uri)
        if uri
    }

    assert len(thumbnails) == 2 * len(pipeline.good)
    assert all(key.startswith(f"{OUTPUT_PREFIX}/.panchro/thumbs/") for key in thumbnails)
    assert set(pipeline.objects) == set(pipeline.uploaded_etags) | outputs | thumbnails
    assert pipeline.multipart_uploads == []


# --------------------------------------------------------------------------- provenance


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _in_order(*moments: datetime | None) -> bool:
    present = [moment for moment in moments if moment is not None]
    return len(present) == len(moments) and present == sorted(present)


def test_done_images_record_complete_provenance(pipeline: PipelineRun) -> None:
    for sample in pipeline.good:
        image = pipeline.images[sample.relative]
        etag, data = pipeline.objects[f"{OUTPUT_PREFIX}/{sample.relative}"]
        where = sample.relative
        assert image.source_uri == f"s3://{pipeline.bucket}/{SOURCE_PREFIX}/{where}"
        assert image.output_uri == f"s3://{pipeline.bucket}/{OUTPUT_PREFIX}/{where}"
        assert image.source_sha256 == sample.sha256, where
        assert image.source_size == len(sample.data), where
        assert image.source_checksum_kind == "etag", where
        source_etag = pipeline.uploaded_etags[f"{SOURCE_PREFIX}/{where}"]
        assert (image.source_checksum or "").strip('"') == source_etag.strip('"'), where
        assert image.output_sha256 == _sha256(data), where
        assert image.output_size == len(data), where
        assert (image.width, image.height) == (sample.width, sample.height), where
        assert (image.mode, image.bit_depth) == (sample.mode, sample.bit_depth), where
        assert image.model_name == "ddcolor_paper_tiny", where
        assert image.checkpoint_sha256 == pipeline.checkpoint_sha256, where
        assert image.input_size == INPUT_SIZE, where
        assert image.sizes_tried == [INPUT_SIZE], where
        assert image.precision == pipeline.precision, where
        assert image.backend == "cpu", where
        assert (image.device or "").startswith("cpu"), where
        assert image.worker_host in _expected_nodes(), where
        assert image.task_id, where
        assert _in_order(image.queued_at, image.started_at, image.finished_at), where
        assert image.started_at is not None and image.finished_at is not None
        seconds = (image.finished_at - image.started_at).total_seconds()
        assert image.duration_s == pytest.approx(seconds, abs=1e-3), where


def test_every_image_has_one_closed_attempt_that_matches_its_row(pipeline: PipelineRun) -> None:
    outcomes = {ImageStatus.DONE: AttemptOutcome.DONE, ImageStatus.FAILED: AttemptOutcome.FAILED}
    for relative, image in pipeline.images.items():
        attempts = pipeline.attempts[relative]
        assert (image.attempts, image.lost_attempts, len(attempts)) == (1, 0, 1), relative
        attempt = attempts[0]
        assert attempt.number == 1
        assert attempt.outcome == outcomes[image.status], relative
        assert attempt.worker == image.worker_host, relative
        assert (attempt.started_at, attempt.finished_at) == (
            image.started_at,
            image.finished_at,
        ), relative
        if image.status == ImageStatus.DONE:
            assert attempt.error is None, relative
            assert attempt.input_size == INPUT_SIZE, relative
            assert attempt.precision == pipeline.precision, relative
        else:
            assert attempt.error == image.last_error, relative


# --------------------------------------------------------------------------- workers


def test_both_cpu_workers_take_part(pipeline: PipelineRun) -> None:
    assert pipeline.nodes == _expected_nodes()
    assert {image.worker_host for image in pipeline.images.values()} == _expected_nodes()


def test_workers_stop_warmly_on_sigterm_and_every_process_exits(pipeline: PipelineRun) -> None:
    assert pipeline.stop_code == 0, pipeline.log
    assert pipeline.all_gone, pipeline.log
    assert "warm shutdown of 2 worker(s)" in pipeline.log
    for node in _expected_nodes():
        assert f"worker {node} exited with exit code 0" in pipeline.log


def test_metrics_report_the_workers_warm_and_the_collection_finished(
    pipeline: PipelineRun,
) -> None:
    got = pipeline.metrics
    assert got.value("panchro_workers_up") == WORKERS
    assert got.value("panchro_workers_warm") == WORKERS
    assert {labels: v for labels, v in got.labelled("panchro_worker_warm").items()} == {
        (("worker", node),): 1.0 for node in _expected_nodes()
    }
    assert got.value("panchro_images_done_total", collection=COLLECTION) == len(pipeline.good)
    assert got.value("panchro_images", collection=COLLECTION, status="failed") == len(
        pipeline.broken
    )
    failed = {dict(k)["code"]: v for k, v in got.labelled("panchro_failed_images").items()}
    assert failed == dict(Counter(sample.code for sample in pipeline.broken))
    assert got.value("panchro_queue_messages", collection=COLLECTION, state="waiting") == 0
    done = sum(
        v for (name, _), v in got.samples.items() if name == "panchro_image_duration_seconds_count"
    )
    assert done == len(pipeline.good)


def test_status_reports_the_collection_as_finished(pipeline: PipelineRun) -> None:
    (report,) = pipeline.status["collections"]
    counts = report["counts"]

    assert report["name"] == COLLECTION
    assert counts["done"] == len(pipeline.good)
    assert counts["failed"] == len(pipeline.broken)
    assert report["remaining"] == 0
    # Failures group by code, whatever the file: the two truncated files are one group.
    codes = Counter(sample.code for sample in pipeline.broken)
    assert {f["code"]: f["count"] for f in report["top_failures"]} == dict(codes)
