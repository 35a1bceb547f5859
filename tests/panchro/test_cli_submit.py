"""Tests of ``panchro submit``: registering a source's images and sending their tasks.

Submissions run against real catalogs (an SQLite file that ``submit`` creates itself, and
a migrated PostgreSQL database), a real Redis broker whose ``colorize`` queue is counted,
and, for S3 sources, moto's S3 server over HTTP.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from submit_helpers import COLORIZE_QUEUE, IMAGES, collection, images, run, run_submit

from catalog import ImageStatus
from panchro.cli import cli
from scheduler.flight import MAX_IN_FLIGHT_KEY
from workers.broker import message_priority, queue_keys


def test_submit_registers_every_image_and_sends_one_task_each(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    output = tmp_path / "colour"

    result = run_submit(
        catalog_url,
        redis_url,
        scans,
        output,
        "--preset",
        "landscape",
        "--priority",
        "3",
        name="1920s",
    )

    assert result.exit_code == 0, result.output
    assert "4 found" in result.stdout and "4 new, 0 changed, 0 unchanged" in result.stdout
    assert "ignored   1 not part of the collection: 1 hidden" in result.stdout
    assert "skipped   1 file, not colorized:\n    notes.txt: not an image" in result.stdout
    assert "4 sent to the workers" in result.stdout
    assert "scanning" in result.stderr
    assert broker.llen(queue_keys("colorize")[message_priority(3)]) == 4
    assert images(catalog_url) == {
        **{relative: ImageStatus.QUEUED for relative in IMAGES},
        "notes.txt": ImageStatus.SKIPPED,
    }
    stored = collection(catalog_url, "1920s")
    assert (stored.preset, stored.input_size, stored.priority) == ("landscape", 1024, 3)
    assert (stored.source, stored.output) == (str(scans), str(output))


def test_submitting_again_changes_nothing_and_sends_nothing(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    args = ("submit", str(scans), "--collection", "1920s", "--output", str(tmp_path / "out"))
    first = run(catalog_url, redis_url, *args)

    again = run(catalog_url, redis_url, *args)

    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert "0 new, 0 changed, 4 unchanged" in again.stdout
    assert "0 sent to the workers" in again.stdout
    assert broker.llen(COLORIZE_QUEUE) == 4


def test_submit_without_dispatch_leaves_the_images_pending(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    result = run_submit(catalog_url, redis_url, scans, tmp_path / "out", "--no-dispatch")

    assert result.exit_code == 0, result.output
    assert "`panchro scheduler` sends the 4 pending" in result.stdout
    assert broker.llen(COLORIZE_QUEUE) == 0
    assert set(images(catalog_url).values()) == {ImageStatus.PENDING, ImageStatus.SKIPPED}


def test_submit_with_a_start_window_holds_every_image(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    if datetime.now().astimezone().strftime("%H:%M") >= "23:58":
        pytest.skip("the window of 23:59 opens within a minute")

    result = run_submit(
        catalog_url, redis_url, scans, tmp_path / "out", "--not-before", "23:59", name="night"
    )

    assert result.exit_code == 0, result.output
    assert "held until 23:59: 4 images wait" in result.stdout
    assert broker.llen(COLORIZE_QUEUE) == 0
    assert collection(catalog_url, "night").not_before == "23:59"


def test_submit_records_the_model_name_and_checksum_of_the_weights(
    catalog_url: str, redis_url: str, scans: Path, tmp_path: Path
) -> None:
    import torch

    from ddcolor.checkpoints import sha256_file
    from ddcolor.layout import official_layout

    # Every floating-point tensor views one shared storage: torch.save writes it once,
    # so a checkpoint of the right keys and shapes takes a few megabytes.
    entries = official_layout("tiny")
    shared = torch.zeros(max(torch.Size(entry.shape).numel() for entry in entries.values()))
    state = {
        key: shared[: torch.Size(entry.shape).numel()].view(entry.shape)
        if entry.floating
        else torch.zeros(entry.shape, dtype=getattr(torch, entry.dtype))
        for key, entry in entries.items()
    }
    weights = tmp_path / "ddcolor_paper_tiny.pth"
    torch.save({"params": state}, weights)

    result = run_submit(
        catalog_url, redis_url, scans, tmp_path / "out", "--weights", str(weights), "--no-dispatch"
    )

    assert result.exit_code == 0, result.output
    stored = collection(catalog_url, "c")
    assert stored.model_name == "ddcolor_paper_tiny"
    assert stored.checkpoint_sha256 == sha256_file(weights)
    assert f"ddcolor_paper_tiny, sha256 {stored.checkpoint_sha256}" in result.stdout
    again = (catalog_url, redis_url, scans, tmp_path / "out", "--weights", str(weights))
    other = run_submit(*again, "--model", "ddcolor_paper", "--no-dispatch")
    both = run_submit(*again, "--untrained", "--no-dispatch")
    assert other.exit_code == 1 and "holds ddcolor_paper_tiny, not --model" in other.output
    assert both.exit_code == 2 and "exclude each other" in both.output


@pytest.mark.s3
def test_submit_scans_an_s3_prefix_through_the_configured_endpoint(
    s3_endpoint_url: str,
    s3_bucket: str,
    redis_url: str,
    broker: redis.Redis,
    scans: Path,
    tmp_path: Path,
) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    for relative in IMAGES:
        client.upload_file(str(scans / relative), s3_bucket, f"scans/{relative}")
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"

    result = CliRunner().invoke(
        cli,
        [
            "--database-url",
            url,
            "--broker-url",
            redis_url,
            "--s3-endpoint-url",
            s3_endpoint_url,
            "submit",
            f"s3://{s3_bucket}/scans",
            "--collection",
            "s3",
            "--output",
            f"s3://{s3_bucket}/colour",
        ],
    )

    assert result.exit_code == 0, result.output
    assert "4 new" in result.stdout
    assert broker.llen(COLORIZE_QUEUE) == 4
    assert sorted(images(url)) == sorted(IMAGES)


def test_submit_keeps_to_the_running_schedulers_max_in_flight(
    catalog_url: str, redis_url: str, broker: redis.Redis, scans: Path, tmp_path: Path
) -> None:
    broker.set(MAX_IN_FLIGHT_KEY, "3", ex=60)  # what `panchro scheduler --max-in-flight 3` says

    result = run_submit(catalog_url, redis_url, scans, tmp_path / "colour")

    assert result.exit_code == 0, result.output
    assert "3 sent to the workers" in result.stdout
    assert broker.llen(COLORIZE_QUEUE) == 3
    assert sorted(images(catalog_url).values()).count(ImageStatus.QUEUED) == 3
