"""Batches of colorize tasks as Celery and kombu write them, recorded once, filled many times.

How :func:`scheduler.sending.celery_sender` sends a batch in one Redis round trip (its module
text says why):

1. Celery's own code (``create_task_message`` and ``send_task_message``, what
   ``app.send_task`` runs) builds two template tasks with placeholder values. kombu hands
   its final Redis commands to a publish batch; a recorder
   (:func:`workers.broker.recording`) stands in for that batch, so they are kept and never
   run. The queue is declared for real.
2. Every field that holds a placeholder (task id, ``argsrepr``, image id) becomes a slot,
   and so do the fields set anew for every message (``delivery_tag``, the event's
   ``clock`` and ``timestamp``). If any other field differs between the two templates,
   or the recording is not shaped as expected, :func:`record_template` returns None and
   Celery's code sends the batch instead.
3. Each task fills the slots of the recorded JSON text (:meth:`Template.render`), and the
   batch goes to Redis in one pipeline (:meth:`Template.write`): one ``LPUSH`` of all its
   messages on the recorded key, then one ``PUBLISH`` per event on the recorded channel.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

from celery import signals

from scheduler.dispatching import TaskRequest
from workers.broker import (
    Subscribers,
    batch_publish_problem,
    message_body,
    push_batch,
    recording,
)

__all__ = ["COMMANDS_PER_MESSAGE", "Publisher", "Template", "record_template"]

logger = logging.getLogger(__name__)

#: Makes the function that publishes one task (task id, image id, argsrepr) with Celery.
Publisher: TypeAlias = Callable[..., Callable[[str, int, str], None]]

#: Redis commands buffered per task on Celery's path (task, event, room to spare).
COMMANDS_PER_MESSAGE = 4
#: Image id of the template tasks: the largest integer every JSON reader keeps exact.
_TEMPLATE_IMAGE_ID = 2**53 - 1
#: Fields that Celery and kombu set anew for every message; the template fills them in.
_FRESH_FIELDS = frozenset({"delivery_tag", "clock", "timestamp"})
#: UUIDs drawn from the system's randomness at a time.
_UUID_CHUNK = 256
#: First hex digit of a UUID's variant field (RFC 9562: binary 10xx) for any random digit.
_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
#: Body encodings of kombu's virtual transports that the template path can write.
_BODY_ENCODINGS = frozenset({"base64", "utf-8", None})
#: Celery's publish signals, which the template path does not send.
_PUBLISH_SIGNALS = ("before_task_publish", "after_task_publish", "task_sent")


class _Unrecognised(Exception):
    """The recorded commands are not the shape the template path can reproduce."""


@dataclass(frozen=True)
class _Layout:
    """JSON text cut at its slots: ``parts[0] + value(slots[0]) + parts[1] + ...``."""

    parts: tuple[str, ...]
    slots: tuple[str, ...]

    def fill(self, values: Mapping[str, str]) -> str:
        """Return the text with each slot replaced by its value (JSON text)."""
        # Several times faster than str.format_map, which parses its format every call.
        out = [""] * (2 * len(self.slots) + 1)
        out[::2] = self.parts
        out[1::2] = [values[slot] for slot in self.slots]
        return "".join(out)


@dataclass(frozen=True)
class _Message:
    """One recorded message: its envelope and its body, both cut at their slots."""

    envelope: _Layout
    body: _Layout
    base64_body: bool
    fresh_slots: tuple[str, ...]

    def fill(self, values: dict[str, str], fresh: Mapping[str, Callable[[], str]]) -> str:
        """Return the envelope of one message as kombu would write it to Redis."""
        for slot in self.fresh_slots:
            values[slot] = fresh[slot]()
        text = self.body.fill(values)
        if self.base64_body:
            values["body"] = '"' + base64.b64encode(text.encode("utf-8")).decode("ascii") + '"'
        else:
            values["body"] = json.dumps(text)
        return self.envelope.fill(values)


@dataclass(frozen=True)
class Template:
    """A batch's messages as Celery and kombu write them, ready to be filled."""

    queue_key: str
    task: _Message
    event_channel: str
    event: _Message | None
    clock: Any

    def render(self, requests: Sequence[TaskRequest]) -> tuple[list[str], list[str]]:
        """Return the task messages and the events of a batch, in order."""
        uuids = _random_uuids()
        forward = self.clock.forward
        fresh: dict[str, Callable[[], str]] = {
            "delivery_tag": lambda: '"' + next(uuids) + '"',
            "clock": lambda: str(int(forward())),
            "timestamp": lambda: repr(time.time()),
        }
        tasks: list[str] = []
        events: list[str] = []
        for request in requests:
            values = {
                "id": '"' + next(uuids) + '"',
                "argsrepr": json.dumps(request.argsrepr),
                "image": str(int(request.image_id)),
            }
            tasks.append(self.task.fill(values, fresh))
            if self.event is not None:
                events.append(self.event.fill(values, fresh))
        return tasks, events

    def write(
        self, channel: Any, payloads: tuple[list[str], list[str]], subscribers: Subscribers
    ) -> None:
        """Send a rendered batch in one pipeline; each event follows all the tasks."""
        tasks, events = payloads
        with channel.conn_or_acquire() as client:
            if events:
                subscribers.wait(client, channel.ResponseError)
            push_batch(client, self.queue_key, tasks, self.event_channel, events)


def _unsupported(producer: Any) -> str | None:
    """Return why the template path cannot be used with this producer, or None."""
    for name in _PUBLISH_SIGNALS:
        if getattr(getattr(signals, name, None), "receivers", None):
            return f"a receiver listens to Celery's {name} signal"
    return batch_publish_problem(producer)


def _random_uuids() -> Iterator[str]:
    """Yield random UUIDs (version 4) as ``str(uuid.uuid4())`` does, three times faster.

    Three go with every task (its id, two delivery tags); the randomness is read in chunks.
    """
    while True:
        digits = os.urandom(16 * _UUID_CHUNK).hex()
        for start in range(0, len(digits), 32):
            h = digits[start : start + 32]
            yield f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def record_template(
    app: Any, producer: Any, publisher: Publisher, warned: list[str]
) -> Template | None:
    """Record and cut the template of a batch; None if Celery's path must send it.

    Args:
        app: The Celery app.
        producer: The pooled producer the batch goes through.
        publisher: Makes the function that publishes one task with Celery's own code.
        warned: Empty until the first warning that Celery's path is taken, then its reason.

    Returns:
        The template, or None.
    """
    reason = _unsupported(producer)
    if reason is None:
        sentinels = {"id": str(uuid.uuid4()), "argsrepr": f"argsrepr-{secrets.token_hex(8)}"}
        publish = publisher(app, producer, retry=False)
        with recording(producer.channel) as recorder, producer.batch(max_size=COMMANDS_PER_MESSAGE):
            for _ in range(2):
                publish(sentinels["id"], _TEMPLATE_IMAGE_ID, sentinels["argsrepr"])
        try:
            return _cut(recorder.calls, sentinels, app.clock)
        except _Unrecognised as exc:
            reason = str(exc)
    if not warned:
        warned.append(reason)
        logger.warning("sending colorize tasks through Celery's slower path: %s", reason)
    return None


def _cut(
    calls: list[list[tuple[str, tuple[Any, ...]]]], sentinels: Mapping[str, str], clock: Any
) -> Template:
    """Turn the commands recorded for two identical template tasks into a template."""
    if not calls or len(calls) % 2:
        raise _Unrecognised(f"recorded {len(calls)} publications for two tasks")
    first, second = calls[: len(calls) // 2], calls[len(calls) // 2 :]
    keys = [
        [[(name, args[:-1]) for name, args in call] for call in half] for half in (first, second)
    ]
    if keys[0] != keys[1]:
        raise _Unrecognised("the two template tasks went to different Redis keys")
    task_call, *event_calls = first
    if len(task_call) != 1 or task_call[0][0] != "lpush" or len(task_call[0][1]) != 2:
        raise _Unrecognised(f"the task was written as {[name for name, _ in task_call]}")
    if len(event_calls) > 1:
        raise _Unrecognised(f"{len(event_calls)} events were published for one task")
    queue_key, task_payload = task_call[0][1]
    task = _message(task_payload, second[0][0][1][1], sentinels, need={"id", "image"})
    event: _Message | None = None
    channel = ""
    if event_calls:
        commands = event_calls[0]
        if [(name, len(args)) for name, args in commands] != [("publish", 2)]:
            raise _Unrecognised(f"the event was sent as {[name for name, _ in commands]}")
        channel, event_payload = commands[0][1]
        event = _message(event_payload, second[1][0][1][1], sentinels, need={"id"})
    return Template(str(queue_key), task, str(channel), event, clock)


def _message(payload: Any, other: Any, sentinels: Mapping[str, str], *, need: set[str]) -> _Message:
    """Cut one recorded envelope at its slots, checking it against its twin."""
    envelope, body, base64_body = _decode(payload)
    twin, twin_body, _ = _decode(other)
    # The encoded bodies differ with their fresh fields; they are compared decoded.
    envelope["body"] = twin["body"] = _Slot("body")
    marked = _mark([envelope, body], None, sentinels)
    if marked != _mark([twin, twin_body], None, sentinels):
        raise _Unrecognised("a field other than the known ones changes from message to message")
    envelope_layout, body_layout = (_layout(part, sentinels) for part in marked)
    found = set(body_layout.slots) | set(envelope_layout.slots)
    if not need <= found:
        raise _Unrecognised(f"the template has no place for {sorted(need - found)}")
    fresh = tuple(sorted(found & _FRESH_FIELDS))
    return _Message(envelope_layout, body_layout, base64_body, fresh)


def _decode(payload: Any) -> tuple[dict[str, Any], Any, bool]:
    """Return a recorded envelope, its decoded body, and whether the body is base64."""
    try:
        envelope = json.loads(payload)
        encoding = envelope["properties"].get("body_encoding")
        kind = (envelope.get("content-type"), envelope.get("content-encoding"), encoding)
        if kind[:2] != ("application/json", "utf-8") or encoding not in _BODY_ENCODINGS:
            raise _Unrecognised(f"a message is {kind}")
        return envelope, json.loads(message_body(envelope)), encoding == "base64"
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise _Unrecognised(f"a recorded message cannot be decoded: {exc!r}") from exc


@dataclass(frozen=True)
class _Slot:
    name: str


def _mark(value: Any, key: str | None, sentinels: Mapping[str, str]) -> Any:
    """Replace every placeholder value and fresh field of a decoded message by a slot."""
    if isinstance(value, dict):
        return {k: _mark(v, k, sentinels) for k, v in value.items()}
    if isinstance(value, list):
        return [_mark(item, None, sentinels) for item in value]
    if key in _FRESH_FIELDS:
        return _Slot(key)
    for name, sentinel in sentinels.items():
        if value == sentinel:
            return _Slot(name)
    if type(value) is int and value == _TEMPLATE_IMAGE_ID:
        return _Slot("image")
    return value


def _layout(value: Any, sentinels: Mapping[str, str]) -> _Layout:
    """Serialise a marked message and cut its text at the slots."""
    token = secrets.token_hex(8)

    def marker(slot: _Slot) -> str:
        return f"@{token}:{slot.name}@"

    text = json.dumps(value, default=marker)
    leftovers = [*sentinels.values(), str(_TEMPLATE_IMAGE_ID)]
    if any(sentinel in text for sentinel in leftovers):
        raise _Unrecognised("a placeholder is part of a longer field")
    pieces = re.split(f'"@{token}:([a-z_]+)@"', text)
    return _Layout(tuple(pieces[0::2]), tuple(pieces[1::2]))
