"""Tests of scheduler.sending: colorize tasks through a Celery app on a real Redis.

The template path (the default on Redis) is compared field by field with what Celery's
own code writes for the same task, and a real Celery worker receives its messages.
"""

from __future__ import annotations

import base64
import json
import logging
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import signals
from scheduler_testing import (
    ARGSREPR_KEY,
    RECEIVED_KEY,
    queue_length,
    queued_messages,
    start_standin_worker,
    stop_worker,
    waiting_in_order,
)

from scheduler import TaskRequest, celery_sender
from workers import broker
from workers.app import create_app
from workers.broker import COLORIZE_QUEUE, message_priority, queue_keys
from workers.names import COLORIZE

#: Seconds to wait for published events to arrive; a guard against hanging only.
EVENT_WAIT_S = 10.0
#: Seconds a worker or a sending thread may take; a guard against hanging only.
DEADLINE_S = 120.0
#: Hard limit of a Pub/Sub subscriber's unread output on the small-buffer Redis, and the
#: backlog at which the sender waits there: the limit is above that backlog plus one batch
#: of events (about 0.8 MiB), and below what an unpaced burst leaves unread.
PUBSUB_LIMIT, PACED_BACKLOG = "pubsub 1536kb 0 0", 256 * 1024
#: Header fields and properties that are the task's id or new for every message.
PER_MESSAGE = {"id", "root_id", "correlation_id", "delivery_tag"}
#: Event fields that are the task's id or new for every event.
PER_EVENT = {"uuid", "root_id", "clock", "timestamp"}


def _requests(count: int, first: int = 100) -> list[TaskRequest]:
    return [TaskRequest(first + index, 7, "1920s", f"box/p{index}.tif") for index in range(count)]


def _decoded(raw: Any) -> dict[str, Any]:
    """A message or event envelope as stored in Redis, its base64 body decoded."""
    envelope: dict[str, Any] = json.loads(raw)
    assert envelope["properties"]["body_encoding"] == "base64"
    envelope["body"] = json.loads(base64.b64decode(envelope["body"]))
    return envelope


def _is_uuid4(text: str) -> bool:
    value = uuid.UUID(text)
    return value.version == 4 and str(value) == text


def _without(fields: dict[str, Any], names: set[str]) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if name not in names}


def _queued_ids(redis_url: str) -> list[str]:
    """Task ids of the messages waiting in the colorize queue, next one first."""
    client = redis.Redis.from_url(redis_url)
    try:
        raw = waiting_in_order(client)
    finally:
        client.close()
    return [json.loads(item)["headers"]["id"] for item in raw]


@pytest.fixture
def events(redis_url: str) -> Iterator[Any]:
    """A subscription to every event channel of the test's Redis database."""
    client = redis.Redis.from_url(redis_url)
    subscription = client.pubsub()  # type: ignore[no-untyped-call]
    subscription.psubscribe("*celeryev*")
    subscription.get_message(timeout=1.0)  # the subscription's confirmation
    yield subscription
    subscription.close()
    client.close()


def _published(subscription: Any, expected: int) -> list[tuple[str, dict[str, Any]]]:
    """Channel and decoded envelope of each event published, waiting for ``expected``."""
    found: list[tuple[str, dict[str, Any]]] = []

    def take(message: Any) -> None:
        if message and message["type"] == "pmessage":
            found.append((message["channel"].decode(), _decoded(message["data"])))

    deadline = time.monotonic() + EVENT_WAIT_S
    while len(found) < expected and time.monotonic() < deadline:
        take(subscription.get_message(timeout=0.2))
    # Anything beyond the expected events would also be a failure.
    extra = subscription.get_message(timeout=0.3)
    while extra is not None:
        take(extra)
        extra = subscription.get_message(timeout=0.3)
    return found


def _task_sent_events(subscription: Any, expected: int) -> list[dict[str, Any]]:
    return [envelope["body"] for _channel, envelope in _published(subscription, expected)]


def test_celery_sender_queues_one_message_per_request_in_order(
    celery_app: Any, redis_url: str
) -> None:
    celery_sender(celery_app)(_requests(3))

    messages = queued_messages(redis_url)
    assert [message.image_id for message in messages] == [100, 101, 102]
    assert {message.task for message in messages} == {COLORIZE}
    assert messages[1].argsrepr == "(101, collection='1920s', source='box/p1.tif')"


def test_celery_sender_writes_the_same_headers_as_send_task(
    celery_app: Any, redis_url: str
) -> None:
    celery_app.send_task(COLORIZE, args=[1], priority=message_priority(0))
    celery_sender(celery_app)(_requests(1))

    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange(queue_keys(COLORIZE_QUEUE)[message_priority(0)], 0, -1)
    finally:
        client.close()
    ours, reference = (json.loads(item) for item in raw)  # newest first
    assert set(ours["headers"]) == set(reference["headers"])
    assert ours["headers"]["task"] == reference["headers"]["task"]
    assert ours["properties"]["delivery_info"] == reference["properties"]["delivery_info"]
    assert ours["content-type"] == reference["content-type"] == "application/json"


@pytest.mark.parametrize("key_prefix", [None, "panchro-test:"])
def test_template_message_equals_celerys_field_by_field(
    redis_url: str, key_prefix: str | None
) -> None:
    options = {"global_keyprefix": key_prefix} if key_prefix else {}
    app = create_app(broker_url=redis_url, broker_transport_options=options)
    request = _requests(1)
    try:
        celery_sender(app, fast=False)(request)
        celery_sender(app)(request)
    finally:
        app.close()

    client = redis.Redis.from_url(redis_url)
    try:
        key = f"{key_prefix or ''}{queue_keys(COLORIZE_QUEUE)[message_priority(0)]}"
        lists = [name for name in client.keys("*") if client.type(name) == b"list"]
        assert lists == [key.encode()]
        ours, celerys = (_decoded(item) for item in client.lrange(key, 0, -1))  # newest first
    finally:
        client.close()
    assert ours.keys() == celerys.keys()
    for field in ours.keys() - {"headers", "properties"}:
        assert ours[field] == celerys[field], field
    assert ours["body"] == [
        [100],
        {},
        {"callbacks": None, "errbacks": None, "chain": None, "chord": None},
    ]
    assert _without(ours["headers"], PER_MESSAGE) == _without(celerys["headers"], PER_MESSAGE)
    assert _without(ours["properties"], PER_MESSAGE) == _without(celerys["properties"], PER_MESSAGE)
    assert ours["headers"].keys() == celerys["headers"].keys()
    assert ours["properties"].keys() == celerys["properties"].keys()
    task_id = ours["headers"]["id"]
    assert task_id == ours["headers"]["root_id"] == ours["properties"]["correlation_id"]
    assert _is_uuid4(task_id) and _is_uuid4(ours["properties"]["delivery_tag"])
    assert task_id != celerys["headers"]["id"]
    assert ours["properties"]["delivery_tag"] != celerys["properties"]["delivery_tag"]


def test_template_task_sent_event_equals_celerys_field_by_field(
    celery_app: Any, redis_url: str, events: Any
) -> None:
    request = _requests(1)
    celery_sender(celery_app, fast=False)(request)
    celery_sender(celery_app)(request)

    (celerys_channel, celerys), (our_channel, ours) = _published(events, 2)
    database = redis_url.rsplit("/", 1)[1]
    assert our_channel == celerys_channel == f"/{database}.celeryev/task.sent"
    assert _without(ours, {"body", "properties"}) == _without(celerys, {"body", "properties"})
    assert _without(ours["properties"], PER_MESSAGE) == _without(celerys["properties"], PER_MESSAGE)
    assert _is_uuid4(ours["properties"]["delivery_tag"])
    body, reference = ours["body"], celerys["body"]
    assert body.keys() == reference.keys()
    assert _without(body, PER_EVENT) == _without(reference, PER_EVENT)
    assert body["type"] == "task-sent" and body["args"] == request[0].argsrepr
    task_id = _queued_ids(redis_url)[-1]
    assert body["uuid"] == body["root_id"] == task_id
    assert body["clock"] > reference["clock"]
    assert isinstance(body["timestamp"], float) and body["timestamp"] >= reference["timestamp"]


def test_celery_sender_publishes_a_task_sent_event_per_message(
    celery_app: Any, redis_url: str, events: Any
) -> None:
    celery_sender(celery_app)(_requests(3))

    sent = _task_sent_events(events, 3)
    assert [event["type"] for event in sent] == ["task-sent"] * 3
    assert [event["queue"] for event in sent] == [COLORIZE_QUEUE] * 3
    assert {event["name"] for event in sent} == {COLORIZE}
    assert [event["uuid"] for event in sent] == _queued_ids(redis_url)


def test_celery_sender_publishes_no_events_when_they_are_off(redis_url: str, events: Any) -> None:
    app = create_app(broker_url=redis_url, task_send_sent_event=False)
    celery_sender(app)(_requests(3))

    assert queue_length(redis_url) == 3
    assert _task_sent_events(events, 0) == []


def test_celery_sender_sends_nothing_for_an_empty_batch(celery_app: Any, redis_url: str) -> None:
    celery_sender(celery_app)([])
    assert queue_length(redis_url) == 0


def test_celery_sender_lets_publish_signal_receivers_see_every_message(
    celery_app: Any, redis_url: str
) -> None:
    seen: list[str] = []

    def receiver(headers: dict[str, Any], **kwargs: Any) -> None:
        seen.append(headers["id"])

    signals.before_task_publish.connect(receiver, weak=False)
    try:
        celery_sender(celery_app)(_requests(3))
    finally:
        signals.before_task_publish.disconnect(receiver)

    assert seen == _queued_ids(redis_url)
    assert [message.image_id for message in queued_messages(redis_url)] == [100, 101, 102]


@pytest.mark.slow
def test_real_worker_receives_every_template_message_once_with_its_argsrepr(
    celery_app: Any,
    redis_url: str,
    postgres_catalog_url: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    requests = _requests(60)
    log = tmp_path / "worker.log"
    client = redis.Redis.from_url(redis_url)
    proc = start_standin_worker(
        redis_url, postgres_catalog_url, log, max_in_flight=10, interval=30.0
    )
    try:
        send = celery_sender(celery_app)
        with caplog.at_level(logging.DEBUG, logger="scheduler.sending"):
            for start in range(0, len(requests), 25):
                send(requests[start : start + 25])
        deadline = time.monotonic() + DEADLINE_S
        while client.llen(RECEIVED_KEY) < len(requests) and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        assert queue_length(redis_url) == 0, log.read_text()
    finally:
        stop_worker(proc)
    received = [int(item) for item in client.lrange(RECEIVED_KEY, 0, -1)]
    shown = {
        int(key): value.decode() if isinstance(value, bytes) else value
        for key, value in client.hgetall(ARGSREPR_KEY).items()
    }
    client.close()

    how = [record.getMessage() for record in caplog.records if record.name == "scheduler.sending"]
    assert len(how) == 3 and all(message.endswith("by a template") for message in how)
    assert sorted(received) == [request.image_id for request in requests], log.read_text()
    assert shown == {request.image_id: request.argsrepr for request in requests}


# --------------------------------------------------------------------------- event subscribers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def small_buffer_redis(tmp_path: Path) -> Iterator[str]:
    """A private Redis that disconnects a subscriber with more than 4 MiB unread."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(tmp_path)]
        + ["--client-output-buffer-limit", PUBSUB_LIMIT],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            try:
                if redis.Redis.from_url(url, socket_timeout=1).ping():
                    break
            except redis.ConnectionError:
                assert proc.poll() is None and time.monotonic() < deadline, "no redis-server"
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _send_batches(app: Any, batches: int) -> threading.Thread:
    """Send ``batches`` batches of 1,000 tasks on a thread; return it, started."""
    send = celery_sender(app)

    def run() -> None:
        for batch in range(batches):
            send(_requests(1_000, first=batch * 1_000))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_template_path_waits_for_a_slow_event_subscriber_so_redis_keeps_it(
    small_buffer_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker, "SUBSCRIBER_BACKLOG_BYTES", PACED_BACKLOG)
    batches = 12  # about 9 MiB of events, far more than the subscriber may leave unread
    client = redis.Redis.from_url(small_buffer_redis)
    subscription = client.pubsub()  # type: ignore[no-untyped-call]
    subscription.psubscribe("*celeryev*")
    subscription.get_message(timeout=1.0)
    received = 0
    app = create_app(broker_url=small_buffer_redis, task_publish_retry=False)
    try:
        sending_thread = _send_batches(app, batches)
        deadline = time.monotonic() + DEADLINE_S
        while received < batches * 1_000 and time.monotonic() < deadline:
            # A reader much slower than the sender, as Flower is; Redis disconnecting it
            # makes get_message raise.
            if subscription.get_message(timeout=1.0) is not None:
                received += 1
                time.sleep(0.0001)
        sending_thread.join(DEADLINE_S)
    finally:
        subscription.close()
        client.close()
        app.close()

    assert received == batches * 1_000
    assert queue_length(small_buffer_redis) == batches * 1_000


def test_template_path_stops_waiting_for_a_subscriber_that_reads_nothing(
    small_buffer_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker, "SUBSCRIBER_BACKLOG_BYTES", PACED_BACKLOG)
    client = redis.Redis.from_url(small_buffer_redis)
    subscription = client.pubsub()  # type: ignore[no-untyped-call]
    subscription.psubscribe("*celeryev*")
    subscription.get_message(timeout=1.0)
    app = create_app(broker_url=small_buffer_redis, task_publish_retry=False)
    try:
        sending_thread = _send_batches(app, 6)
        sending_thread.join(DEADLINE_S)
        assert not sending_thread.is_alive(), "sending waits for a subscriber that reads nothing"
    finally:
        subscription.close()
        client.close()
        app.close()

    assert queue_length(small_buffer_redis) == 6_000


def test_template_path_sends_where_redis_refuses_to_list_the_subscribers(
    small_buffer_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    admin = redis.Redis.from_url(small_buffer_redis)
    user = ["producer", "on", ">pw", "~*", "&*", "+@all", "-client"]
    admin.execute_command("ACL", "SETUSER", *user)  # type: ignore[no-untyped-call]
    admin.close()
    url = small_buffer_redis.replace("redis://", "redis://producer:pw@")
    app = create_app(broker_url=url, task_publish_retry=False)
    try:
        send = celery_sender(app)
        with (
            caplog.at_level(logging.DEBUG, logger="scheduler.sending"),
            caplog.at_level(logging.DEBUG, logger="workers.broker"),
        ):
            send(_requests(3))
            send(_requests(3, first=200))
    finally:
        app.close()

    said = [record.getMessage() for record in caplog.records]
    assert [message.startswith("cannot see the event subscribers") for message in said] == [
        True,
        False,
        False,
    ]
    assert said[1].endswith("by a template") and said[2].endswith("by a template")

    assert [message.image_id for message in queued_messages(small_buffer_redis)] == [
        100,
        101,
        102,
        200,
        201,
        202,
    ]
