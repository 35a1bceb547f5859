"""Sending colorize tasks to the broker, a whole batch in one Redis round trip.

``celery_sender(app)`` returns the ``send`` callable that :func:`scheduler.dispatching.dispatch`
takes. It knows the task only by its name (``workers.names.COLORIZE``), so the producer
never imports the worker's code, torch or the model.

Each task costs Redis two commands: the message (``LPUSH`` on the queue's list) and the
``task-sent`` event that Flower shows (``PUBLISH`` on the event exchange's channel).
Celery's code spends about 100 µs per task building both, which capped dispatch at about
4,500 tasks per second. So, on Redis, each batch is sent from a template:

1. Celery's own code (``create_task_message`` and ``send_task_message``, what
   ``app.send_task`` runs) builds two template tasks with placeholder values. kombu hands
   its final Redis commands to a publish batch; a recorder stands in for that batch, so
   they are kept and never run. The queue is declared for real.
2. Every field that holds a placeholder (task id, ``argsrepr``, image id) becomes a slot,
   and so do the fields set anew for every message (``delivery_tag``, the event's
   ``clock`` and ``timestamp``). If any other field differs between the two templates,
   or the recording is not shaped as expected, Celery's code sends the batch instead.
3. Each task fills the slots of the recorded JSON text, and the batch goes to Redis in
   one pipeline: one ``LPUSH`` of all its messages on the recorded key (the list order
   of one ``LPUSH`` per message), then one ``PUBLISH`` per event on the recorded channel.

Why a recording, not messages written by hand: envelope, queue key (priority suffix, key
prefix), body encoding, event channel and headers come from the installed Celery and
kombu, and what a template cannot express falls back to the slow path rather than
producing messages no worker reads. Why not Celery's path tuned: one producer and one
pipeline per batch (the fallback) leave its per-message work, the cost that mattered.

Celery's path is also taken when the broker is not Redis, when kombu has no publish
batches or may replay a pipeline (``retry_on_timeout``), and while a receiver listens to
Celery's publish signals, which the template path does not send. A batch's events wait for
Pub/Sub subscribers that lag behind, so that Redis does not cut Flower off (``_Subscribers``).
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
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from celery import signals
from kombu.exceptions import OperationalError

from scheduler.dispatching import Send, TaskRequest
from scheduler.errors import BrokerUnavailable
from workers.names import COLORIZE

logger = logging.getLogger(__name__)

#: Redis commands buffered per task on Celery's path (task, event, room to spare).
_COMMANDS_PER_MESSAGE = 4
#: Image id of the template tasks: the largest integer every JSON reader keeps exact.
_TEMPLATE_IMAGE_ID = 2**53 - 1
#: Fields that Celery and kombu set anew for every message; the template fills them in.
_FRESH_FIELDS = frozenset({"delivery_tag", "clock", "timestamp"})
#: UUIDs drawn from the system's randomness at a time.
_UUID_CHUNK = 256
#: First hex digit of a UUID's variant field (RFC 9562: binary 10xx) for any random digit.
_UUID_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}
#: Bytes of events a Pub/Sub subscriber may leave unread before sending waits for it.
_SUBSCRIBER_BACKLOG_BYTES = 2 * 2**20
#: Seconds a lagging subscriber may read nothing before sending stops waiting for it.
_SUBSCRIBER_STALL_S = 2.0
#: Seconds between two looks at the subscribers' backlog while waiting.
_SUBSCRIBER_POLL_S = 0.01
#: Body encodings of kombu's virtual transports that the template path can write.
_BODY_ENCODINGS = frozenset({"base64", "utf-8", None})
#: Celery's publish signals, which the template path does not send.
_PUBLISH_SIGNALS = ("before_task_publish", "after_task_publish", "task_sent")


def celery_sender(app: Any, *, fast: bool = True) -> Send:
    """Return a ``send`` callable that sends colorize tasks with a Celery app.

    Each batch reuses one pooled producer and reaches Redis in one pipeline, built from a
    template that Celery's own code recorded for it (see the module docstring): workers
    and Flower see the messages and ``task-sent`` events (when the app's
    ``task_send_sent_event`` is on) that ``app.send_task`` would give. A batch is all or
    nothing as far as the producer can tell: if the pipeline fails, the error says
    ``sent=0`` and the batch returns to pending; a message that did reach the broker is
    then harmless (a worker finds its image not queued and drops it).

    Args:
        app: The Celery app (``workers.app.create_app(broker_url=...)``).
        fast: Build each batch from a recorded template where possible; False sends
            every message through Celery's own code (about ten times slower).

    Returns:
        The callable; it raises ``BrokerUnavailable`` when the broker cannot be reached.
    """
    warned: list[str] = []
    subscribers = _Subscribers()

    def send(requests: Sequence[TaskRequest]) -> None:
        if not requests:
            return
        sent = 0
        template: _Template | None = None
        try:
            with app.producer_or_acquire() as producer:
                errors = _broker_errors(producer)
                try:
                    template = _record_template(app, producer, warned) if fast else None
                    if template is None:
                        for count in _send_with_celery(app, producer, requests):
                            sent = count
                    else:
                        # Rendered before the pipeline opens: it needs no broker.
                        payloads = template.render(requests)
                        template.write(producer.channel, payloads, subscribers)
                except errors as exc:
                    raise BrokerUnavailable(
                        f"cannot send tasks to the broker: {exc}", sent=sent
                    ) from exc
        except (OperationalError, OSError) as exc:
            # Raised when no connection could be made at all.
            raise BrokerUnavailable(f"cannot reach the broker: {exc}", sent=sent) from exc
        how = "Celery's path" if template is None else "a template"
        logger.debug(
            "collection %s: sent %d tasks by %s", requests[0].collection, len(requests), how
        )

    return send


def _send_with_celery(app: Any, producer: Any, requests: Sequence[TaskRequest]) -> Iterator[int]:
    """Send every message through Celery's own code, yielding how many have been sent.

    With kombu's publish batches the whole batch goes in one pipeline at the end, so the
    count is only yielded then; without them it is yielded after every message.
    """
    batched = hasattr(producer, "batch") and producer.supports_batch_publish
    publish = _publisher(app, producer, retry=False if batched else None)
    if batched:
        with producer.batch(max_size=_COMMANDS_PER_MESSAGE * len(requests)):
            for request in requests:
                publish(str(uuid.uuid4()), request.image_id, request.argsrepr)
        yield len(requests)
        return
    for sent, request in enumerate(requests, start=1):
        publish(str(uuid.uuid4()), request.image_id, request.argsrepr)
        yield sent


def _publisher(app: Any, producer: Any, *, retry: bool | None) -> Callable[[str, int, str], None]:
    """Return a function that publishes one colorize task on ``producer`` with Celery."""
    amqp = app.amqp
    queue = amqp.router.route({}, COLORIZE)["queue"]
    options = {
        "kwargsrepr": "{}",
        "create_sent_event": bool(app.conf.task_send_sent_event),
        "ignore_result": True,
    }
    create_message = amqp.create_task_message
    send_message = amqp.send_task_message
    declared: list[bool] = []

    def publish(task_id: str, image_id: int, argsrepr: str) -> None:
        message = create_message(task_id, COLORIZE, [image_id], {}, argsrepr=argsrepr, **options)
        # None lets Celery declare the queue (a no-op once known); [] skips the check.
        declare: list[Any] | None = [] if declared else None
        send_message(producer, COLORIZE, message, queue=queue, declare=declare, retry=retry)
        declared.append(True)

    return publish


def _broker_errors(producer: Any) -> tuple[type[BaseException], ...]:
    connection = producer.connection
    found: tuple[type[BaseException], ...] = (OperationalError, OSError)
    for name in ("connection_errors", "channel_errors"):
        found += tuple(getattr(connection, name, ()))
    return found


# --------------------------------------------------------------------------- the template


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
class _Template:
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
        self, channel: Any, payloads: tuple[list[str], list[str]], subscribers: _Subscribers
    ) -> None:
        """Send a rendered batch in one pipeline; each event follows all the tasks."""
        tasks, events = payloads
        with channel.conn_or_acquire() as client:
            if events:
                subscribers.wait(client, channel.ResponseError)
            with client.pipeline(transaction=False) as pipe:
                # LPUSH key a b c stores what LPUSH a, LPUSH b, LPUSH c would: c at the head.
                pipe.lpush(self.queue_key, *tasks)
                for event in events:
                    pipe.publish(self.event_channel, event)
                pipe.execute()


class _Subscribers:
    """Holds a burst of events back until Redis's Pub/Sub subscribers (Flower) catch up.

    Redis disconnects a subscriber whose unread events outgrow its output buffer limit
    (``client-output-buffer-limit pubsub``: 32 MiB, or 8 MiB for a minute), and Flower
    reads a few thousand events per second, fewer than template batches bring. So each
    batch waits while a subscriber has more than ``_SUBSCRIBER_BACKLOG_BYTES`` unread,
    unless it has read nothing for ``_SUBSCRIBER_STALL_S`` or ``CLIENT LIST`` is refused.
    """

    def __init__(self) -> None:
        self._stalled: set[str] = set()
        self._blind = False

    def wait(self, client: Any, refused: type[BaseException]) -> None:
        """Return once no subscriber that still reads has a large backlog."""
        lowest: dict[str, tuple[int, float]] = {}  # each laggard's least backlog, and when
        while not self._blind:
            try:
                clients = client.client_list(_type="pubsub")
            except refused as exc:
                self._blind = True
                logger.info("cannot see the event subscribers' backlog (%s); not pacing", exc)
                return
            now = time.monotonic()
            backlogs = [(str(item["id"]), int(item.get("omem", 0))) for item in clients]
            behind = [(name, size) for name, size in backlogs if size > _SUBSCRIBER_BACKLOG_BYTES]
            behind = [(name, size) for name, size in behind if name not in self._stalled]
            if not behind:
                return
            for name, size in behind:
                if size < lowest.get(name, (size + 1, now))[0]:
                    lowest[name] = (size, now)
                elif now - lowest[name][1] >= _SUBSCRIBER_STALL_S:
                    self._stalled.add(name)
                    logger.warning("event subscriber %s reads nothing; not waiting for it", name)
            time.sleep(_SUBSCRIBER_POLL_S)


def _random_uuids() -> Iterator[str]:
    """Yield random UUIDs (version 4) as ``str(uuid.uuid4())`` does, three times faster.

    Three go with every task (its id, two delivery tags); the randomness is read in chunks.
    """
    while True:
        digits = os.urandom(16 * _UUID_CHUNK).hex()
        for start in range(0, len(digits), 32):
            h = digits[start : start + 32]
            yield f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_UUID_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


class _Recorder:
    """Stands in for kombu's Redis publish batch: keeps the final commands, runs none."""

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.calls: list[list[tuple[str, tuple[Any, ...]]]] = []

    def publish(self, message: Any, **kwargs: Any) -> Any:
        self.calls.append([])
        return self.channel.basic_publish(message, _publish_batch=self, **kwargs)

    def add(self, name: str, *args: Any) -> None:
        if not self.calls:
            raise RuntimeError("a Redis command was added outside a publication")
        self.calls[-1].append((name, args))

    def flush(self) -> None:
        pass  # the commands are kept, never sent

    def discard(self) -> None:
        self.calls.clear()

    def close(self) -> None:
        pass


@contextmanager
def _recording(channel: Any) -> Iterator[_Recorder]:
    """Make the channel's next publish batch a recorder, for as long as the block runs."""
    recorder = _Recorder(channel)
    # An instance attribute over the class's method, for this channel and this block only.
    channel.create_publish_batch = lambda max_size: recorder
    try:
        yield recorder
    finally:
        del channel.create_publish_batch


def _record_template(app: Any, producer: Any, warned: list[str]) -> _Template | None:
    """Record and cut the template of a batch; None if Celery's path must send it."""
    reason = _unsupported(producer)
    if reason is None:
        sentinels = {"id": str(uuid.uuid4()), "argsrepr": f"argsrepr-{secrets.token_hex(8)}"}
        publish = _publisher(app, producer, retry=False)
        recording = _recording(producer.channel)
        with recording as recorder, producer.batch(max_size=_COMMANDS_PER_MESSAGE):
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


def _unsupported(producer: Any) -> str | None:
    """Return why the template path cannot be used with this producer, or None."""
    for name in _PUBLISH_SIGNALS:
        if getattr(getattr(signals, name, None), "receivers", None):
            return f"a receiver listens to Celery's {name} signal"
    connection = producer.connection
    if connection is None or connection.transport.driver_type != "redis":
        return "the broker is not Redis"
    channel = producer.channel
    if not hasattr(channel, "create_publish_batch") or not hasattr(channel, "conn_or_acquire"):
        return "this kombu has no Redis publish batches"
    if not (hasattr(producer, "batch") and producer.supports_batch_publish):
        return "the Redis connection may replay a pipeline (retry options)"
    return None


def _cut(
    calls: list[list[tuple[str, tuple[Any, ...]]]], sentinels: Mapping[str, str], clock: Any
) -> _Template:
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
    return _Template(str(queue_key), task, str(channel), event, clock)


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
        text = envelope["body"]
        if encoding == "base64":
            text = base64.b64decode(text).decode("utf-8")
        return envelope, json.loads(text), encoding == "base64"
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
