"""Tests of scheduler.sending: colorize tasks through a Celery app on a real Redis."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from scheduler_testing import queue_length, queued_messages

from scheduler import TaskRequest, celery_sender
from workers.app import COLORIZE_QUEUE, create_app
from workers.names import COLORIZE

#: Seconds to wait for published events to arrive; a guard against hanging only.
EVENT_WAIT_S = 10.0


def _requests(count: int) -> list[TaskRequest]:
    return [TaskRequest(100 + index, 7, "1920s", f"box/p{index}.tif") for index in range(count)]


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


def _task_sent_events(subscription: Any, expected: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + EVENT_WAIT_S
    while len(found) < expected and time.monotonic() < deadline:
        message = subscription.get_message(timeout=0.2)
        if message and message["type"] == "pmessage":
            envelope = json.loads(message["data"])
            found.append(json.loads(base64.b64decode(envelope["body"])))
    # Anything beyond the expected events would also be a failure.
    extra = subscription.get_message(timeout=0.3)
    while extra is not None:
        if extra["type"] == "pmessage":
            envelope = json.loads(extra["data"])
            found.append(json.loads(base64.b64decode(envelope["body"])))
        extra = subscription.get_message(timeout=0.3)
    return found


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
    celery_app.send_task(COLORIZE, args=[1])
    celery_sender(celery_app)(_requests(1))

    client = redis.Redis.from_url(redis_url)
    try:
        raw = client.lrange(COLORIZE_QUEUE, 0, -1)
    finally:
        client.close()
    ours, reference = (json.loads(item) for item in raw)  # newest first
    assert set(ours["headers"]) == set(reference["headers"])
    assert ours["headers"]["task"] == reference["headers"]["task"]
    assert ours["properties"]["delivery_info"] == reference["properties"]["delivery_info"]
    assert ours["content-type"] == reference["content-type"] == "application/json"


def test_celery_sender_publishes_a_task_sent_event_per_message(
    celery_app: Any, events: Any
) -> None:
    celery_sender(celery_app)(_requests(3))

    sent = _task_sent_events(events, 3)
    assert [event["type"] for event in sent] == ["task-sent"] * 3
    assert [event["queue"] for event in sent] == [COLORIZE_QUEUE] * 3
    assert {event["name"] for event in sent} == {COLORIZE}


def test_celery_sender_publishes_no_events_when_they_are_off(redis_url: str, events: Any) -> None:
    app = create_app(broker_url=redis_url, task_send_sent_event=False)
    celery_sender(app)(_requests(3))

    assert queue_length(redis_url) == 3
    assert _task_sent_events(events, 0) == []


def test_celery_sender_sends_nothing_for_an_empty_batch(celery_app: Any, redis_url: str) -> None:
    celery_sender(celery_app)([])
    assert queue_length(redis_url) == 0
