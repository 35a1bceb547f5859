"""A real worker that finds mid-run that it cannot work hands its image back and stops.

moto's server runs with IAM authentication on: the worker's keys may use one bucket
only. ``panchro workers`` starts (its checks pass), colorizes an image of that bucket,
then meets a collection submitted later in a bucket its keys may not read. It must hand
the image back, return the message and stop, never failing an image; a worker with
other keys then colorizes every image of that collection from the same messages. A worker
running other weights than a collection was submitted for does the same.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from celery import Celery
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import WAIT_S, attempts_of, closed_port, write_gray_png

from catalog import ImageStatus, list_images, make_sessionmaker, transaction
from migrations import upgrade
from storage import StorageOptions, open_storage
from workers.app import create_app
from workers.broker import message_priority, queue_keys
from workers.errors import EX_CONFIG

pytestmark = [pytest.mark.slow, pytest.mark.s3]

#: Seconds a worker gets to start and colorize the few images; a guard against hanging.
WORK_S = 240.0
#: Input size of the collections, and of the workers' warm-up pass (the default, 512 px,
#: would take four times as long for nothing these tests look at).
INPUT_SIZE = 256


@dataclass(frozen=True)
class Keys:
    """One IAM user's access key."""

    access_key: str
    secret_key: str

    def env(self) -> dict[str, str]:
        """The AWS variables that make boto3 use these keys."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }


@dataclass(frozen=True)
class GuardedS3:
    """A private moto server that checks IAM credentials and policies."""

    endpoint: str
    allowed: str
    denied: str
    admin: Keys
    scoped: Keys


def _user(iam: object, name: str, resources: list[str]) -> Keys:
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": resources}],
    }
    iam.create_user(UserName=name)  # type: ignore[attr-defined]
    iam.put_user_policy(  # type: ignore[attr-defined]
        UserName=name, PolicyName="s3", PolicyDocument=json.dumps(policy)
    )
    key = iam.create_access_key(UserName=name)["AccessKey"]  # type: ignore[attr-defined]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"])


@pytest.fixture
def guarded_s3() -> Iterator[GuardedS3]:
    """Two buckets; an admin user for both and a scoped user for ``allowed`` only."""
    import boto3

    port = closed_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                requests.get(endpoint, timeout=1)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "moto did not start"
                time.sleep(0.1)
        anyone = {"endpoint_url": endpoint, "region_name": "us-east-1"}
        setup = {**anyone, "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        s3, iam = boto3.client("s3", **setup), boto3.client("iam", **setup)
        suffix = uuid.uuid4().hex[:8]
        allowed, denied = f"allowed-{suffix}", f"denied-{suffix}"
        for bucket in (allowed, denied):
            s3.create_bucket(Bucket=bucket)
        admin = _user(iam, "admin", ["*"])
        scoped = _user(iam, "scoped", [f"arn:aws:s3:::{allowed}", f"arn:aws:s3:::{allowed}/*"])
        requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
        yield GuardedS3(endpoint, allowed, denied, admin, scoped)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


class Launcher:
    """``panchro workers --cpu 1 --untrained`` in its own session, its output in a file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "panchro.cli", "workers", "--cpu", "1", "--untrained"],
                cwd=log.parent,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        """Everything the launcher and its worker wrote so far."""
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        """Warm shutdown if still running; kill whatever is left of the session."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT_S)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()


def _statuses(sessions: sessionmaker[Session], name: str) -> dict[str, ImageStatus]:
    with transaction(sessions) as db:
        return {image.relative_path: image.status for image in list_images(db, name)}


def _wait(condition: object, what: str, launcher: Launcher, *, running: bool = True) -> None:
    assert callable(condition)
    deadline = time.monotonic() + WORK_S
    while not condition():
        if running:
            assert launcher.proc.poll() is None, launcher.text()
        assert time.monotonic() < deadline, f"gave up waiting for {what}:\n{launcher.text()}"
        time.sleep(0.3)


def _submit(
    sessions: sessionmaker[Session], producer: Celery, s3: GuardedS3, name: str, bucket: str
) -> None:
    from scheduler import CollectionSettings, celery_sender, submit

    source = f"s3://{bucket}/scans"
    submit(
        sessions,
        name=name,
        source=source,
        output=f"s3://{bucket}/colour",
        storage=open_storage(source, StorageOptions(endpoint_url=s3.endpoint, region="us-east-1")),
        send=celery_sender(producer),
        max_in_flight=10,
        settings=CollectionSettings(input_size=INPUT_SIZE),
    )


def test_worker_denied_a_bucket_mid_run_hands_the_image_back_and_stops(
    guarded_s3: GuardedS3,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3 = guarded_s3
    for key, value in s3.admin.env().items():
        monkeypatch.setenv(key, value)
    admin_store = open_storage(
        f"s3://{s3.allowed}", StorageOptions(endpoint_url=s3.endpoint, region="us-east-1")
    )
    png = write_gray_png(tmp_path / "a.png").read_bytes()
    admin_store.write(f"s3://{s3.allowed}/scans/a.png", png)
    denied_names = ["p1.png", "p2.png", "p3.png"]
    for name in denied_names:
        admin_store.write(f"s3://{s3.denied}/scans/{name}", png)
    database_url = make_url(f"sqlite:///{tmp_path / 'catalog.sqlite3'}").render_as_string()
    upgrade(database_url)
    sessions = make_sessionmaker(database_url)
    producer = create_app(broker_url=redis_url)
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PANCHRO_", "AWS_"))}
    base.update(
        PANCHRO_DATABASE_URL=database_url,
        PANCHRO_BROKER_URL=redis_url,
        PANCHRO_S3_ENDPOINT_URL=s3.endpoint,
        PANCHRO_S3_REGION="us-east-1",
        PANCHRO_DEVICE="cpu",
        PANCHRO_PRECISION="fp32",
        PANCHRO_WORKER_SIZE=str(INPUT_SIZE),
    )
    _submit(sessions, producer, s3, "allowed", s3.allowed)
    scoped = Launcher({**base, **s3.scoped.env()}, tmp_path / "scoped.log")
    try:
        _wait(
            lambda: _statuses(sessions, "allowed") == {"a.png": ImageStatus.DONE},
            "the scoped worker to colorize the image of its bucket",
            scoped,
        )
        _submit(sessions, producer, s3, "denied", s3.denied)
        _wait(lambda: scoped.proc.poll() is not None, "the worker to stop", scoped, running=False)
    finally:
        scoped.stop()

    log = scoped.text()
    assert scoped.proc.returncode == EX_CONFIG, log
    assert "cannot work and stops" in log and "AccessDenied" in log, log
    assert "stopped because it cannot work" in log, log
    assert "restarting worker" not in log, log
    handed_back = _statuses(sessions, "denied")
    assert handed_back == dict.fromkeys(denied_names, ImageStatus.QUEUED), log
    with transaction(sessions) as db:
        tried = [image for image in list_images(db, "denied") if image.attempts]
    assert len(tried) == 1, log
    [attempt] = attempts_of(sessions, tried[0].id)
    assert attempt.finished_at is not None and "handed back" in (attempt.error or "")
    assert tried[0].last_error is None

    admin = Launcher({**base, **s3.admin.env()}, tmp_path / "admin.log")
    try:
        _wait(
            lambda: _statuses(sessions, "denied") == dict.fromkeys(denied_names, ImageStatus.DONE),
            "a worker with other keys to colorize the handed-back images",
            admin,
        )
    finally:
        admin.stop()
        producer.close()
        sessions.kw["bind"].dispose()


def test_worker_with_other_weights_hands_the_image_back_and_stops(
    redis_url: str, tmp_path: Path
) -> None:
    import redis

    from scheduler import CollectionSettings, celery_sender, submit

    source, output = tmp_path / "scans", tmp_path / "colour"
    for name in ("a.png", "b.png"):
        write_gray_png(source / name)
    database_url = make_url(f"sqlite:///{tmp_path / 'catalog.sqlite3'}").render_as_string()
    upgrade(database_url)
    sessions = make_sessionmaker(database_url)
    producer = create_app(broker_url=redis_url)
    submit(
        sessions,
        name="other-weights",
        source=source,
        output=output,
        storage=open_storage(source),
        send=celery_sender(producer),
        max_in_flight=10,
        settings=CollectionSettings(input_size=INPUT_SIZE, checkpoint_sha256="ab" * 32),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PANCHRO_")}
    env.update(
        PANCHRO_DATABASE_URL=database_url,
        PANCHRO_BROKER_URL=redis_url,
        PANCHRO_DEVICE="cpu",
        PANCHRO_PRECISION="fp32",
        PANCHRO_WORKER_SIZE=str(INPUT_SIZE),
    )
    launcher = Launcher(env, tmp_path / "workers.log")
    try:
        _wait(
            lambda: launcher.proc.poll() is not None, "the worker to stop", launcher, running=False
        )
    finally:
        launcher.stop()
        producer.close()

    log = launcher.text()
    assert launcher.proc.returncode == EX_CONFIG, log
    assert "submitted for checkpoint sha256 abababababab" in log and "random weights" in log
    assert _statuses(sessions, "other-weights") == dict.fromkeys(
        ["a.png", "b.png"], ImageStatus.QUEUED
    ), log
    assert not output.exists()
    queued = redis.Redis.from_url(redis_url)
    assert (
        queued.llen(queue_keys("colorize")[message_priority(0)]) == 2
    )  # both messages are back in the queue
    queued.close()
    sessions.kw["bind"].dispose()
