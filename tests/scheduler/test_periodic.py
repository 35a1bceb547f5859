"""Tests of scheduler.periodic: the dispatch task and its beat schedule."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from scheduler_testing import pop_next, queue_length, statuses, submit_night
from sqlalchemy.orm import Session, sessionmaker

from scheduler import SCHEDULER_QUEUE, install_dispatcher, run_scheduler, scheduler_argv
from scheduler.periodic import colorize_messages
from workers.app import create_app
from workers.broker import COLORIZE_QUEUE, queue_keys
from workers.names import DISPATCH


def _register(sessions: sessionmaker[Session], tmp_path: Path, count: int) -> None:
    submit_night(sessions, tmp_path, [f"p{index}.tif" for index in range(count)], max_in_flight=1)


def _first_pass(
    celery_app: Any,
    database_url: str,
    sessions: sessionmaker[Session],
    tmp_path: Path,
    count: int,
    max_in_flight: int,
    **options: Any,
) -> int:
    """Register ``count`` images, install the dispatcher and run its task once."""
    _register(sessions, tmp_path, count)
    install_dispatcher(
        celery_app, database_url=database_url, max_in_flight=max_in_flight, **options
    )
    sent: int = celery_app.tasks[DISPATCH]()
    return sent


def _closed_port() -> int:
    """A loopback port nothing listens on (free when asked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_install_dispatcher_schedules_the_dispatch_task_on_the_scheduler_queue(
    celery_app: Any, database_url: str
) -> None:
    install_dispatcher(celery_app, database_url=database_url, max_in_flight=5, interval=7.5)

    assert DISPATCH in celery_app.tasks
    entry = celery_app.conf.beat_schedule["panchro-dispatch"]
    assert entry["task"] == DISPATCH
    assert entry["schedule"] == 7.5
    assert entry["options"] == {"queue": SCHEDULER_QUEUE, "expires": 7.5}
    assert celery_app.conf.beat_scheduler == "celery.beat:Scheduler"


def test_dispatch_task_tops_the_broker_up_to_the_limit(
    celery_app: Any,
    database_url: str,
    sessions: sessionmaker[Session],
    redis_url: str,
    tmp_path: Path,
) -> None:
    _register(sessions, tmp_path, 5)
    install_dispatcher(celery_app, database_url=database_url, max_in_flight=3)

    sent = celery_app.tasks[DISPATCH]()

    assert sent == 3
    assert queue_length(redis_url) == 3
    assert sorted(statuses(sessions).values()) == ["pending"] * 2 + ["queued"] * 3


def test_dispatch_task_survives_an_unreachable_broker(
    database_url: str, sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    _register(sessions, tmp_path, 2)
    port = _closed_port()
    app = create_app(
        broker_url=f"redis://127.0.0.1:{port}/0",
        task_publish_retry=False,
        broker_transport_options={"max_retries": 0},
    )
    install_dispatcher(app, database_url=database_url, max_in_flight=10)

    assert app.tasks[DISPATCH]() == 0
    assert set(statuses(sessions).values()) == {"pending"}


@pytest.mark.parametrize(("max_in_flight", "interval"), [(0, 10.0), (5, 0.0)])
def test_install_dispatcher_refuses_non_positive_settings(
    celery_app: Any, max_in_flight: int, interval: float
) -> None:
    with pytest.raises(ValueError):
        install_dispatcher(
            celery_app, database_url="sqlite://", max_in_flight=max_in_flight, interval=interval
        )


def test_scheduler_argv_runs_one_worker_with_beat_on_the_scheduler_queue() -> None:
    argv = scheduler_argv(loglevel="WARNING")

    assert argv[0] == "worker"
    assert "--beat" in argv
    assert "--queues=scheduler" in argv
    assert "--concurrency=1" in argv
    assert "--loglevel=WARNING" in argv


# --------------------------------------------------------------------------- lost messages


def _lose_the_messages(redis_url: str) -> None:
    """What a broker restarted without persistence does: the queue is gone."""
    client = redis.Redis.from_url(redis_url)
    try:
        client.delete(*queue_keys(COLORIZE_QUEUE))
    finally:
        client.close()


def test_queued_images_whose_messages_were_lost_are_sent_again(
    celery_app: Any,
    database_url: str,
    sessions: sessionmaker[Session],
    redis_url: str,
    tmp_path: Path,
) -> None:
    assert _first_pass(celery_app, database_url, sessions, tmp_path, 3, 2, orphan_after=0.0) == 2
    _lose_the_messages(redis_url)

    sent = celery_app.tasks[DISPATCH]()

    assert sent == 2
    assert queue_length(redis_url) == 2
    assert sorted(statuses(sessions).values()) == ["pending", "queued", "queued"]


def test_nothing_is_given_back_while_the_broker_holds_colorize_messages(
    celery_app: Any,
    database_url: str,
    sessions: sessionmaker[Session],
    redis_url: str,
    tmp_path: Path,
) -> None:
    _first_pass(celery_app, database_url, sessions, tmp_path, 3, 2, orphan_after=0.0)

    assert celery_app.tasks[DISPATCH]() == 0
    assert queue_length(redis_url) == 2
    assert colorize_messages(celery_app) == 2


def test_a_delivered_unacknowledged_message_holds_the_sweep_back(
    celery_app: Any,
    database_url: str,
    sessions: sessionmaker[Session],
    redis_url: str,
    tmp_path: Path,
) -> None:
    _first_pass(celery_app, database_url, sessions, tmp_path, 1, 1, orphan_after=0.0)
    client = redis.Redis.from_url(redis_url)
    try:
        # A worker holds the message (kombu's record of it), not the queue.
        client.hset("unacked", "delivery-tag", pop_next(client) or b"")

        assert celery_app.tasks[DISPATCH]() == 0
        assert colorize_messages(celery_app) == 1
        assert list(statuses(sessions).values()) == ["queued"]
    finally:
        client.close()


def test_images_queued_within_the_grace_period_are_left_alone(
    celery_app: Any,
    database_url: str,
    sessions: sessionmaker[Session],
    redis_url: str,
    tmp_path: Path,
) -> None:
    _first_pass(celery_app, database_url, sessions, tmp_path, 1, 1)
    _lose_the_messages(redis_url)

    assert celery_app.tasks[DISPATCH]() == 0
    assert queue_length(redis_url) == 0
    assert list(statuses(sessions).values()) == ["queued"]


def test_an_unreachable_broker_cannot_say_how_many_messages_it_holds() -> None:
    port = _closed_port()
    app = create_app(
        broker_url=f"redis://127.0.0.1:{port}/0", broker_transport_options={"max_retries": 0}
    )

    assert colorize_messages(app) is None


# ------------------------------------------------------------------------- panchro scheduler


def test_run_scheduler_runs_passes_in_its_own_process_until_stopped(
    celery_app: Any,
    database_url: str,
    sessions: sessionmaker[Session],
    redis_url: str,
    tmp_path: Path,
) -> None:
    _register(sessions, tmp_path, 3)
    stop = threading.Event()
    sent: list[int] = []

    def after_pass(count: int) -> None:
        sent.append(count)
        if len(sent) == 2:
            stop.set()

    passes = run_scheduler(
        celery_app,
        database_url=database_url,
        max_in_flight=2,
        interval=0.01,
        stop=stop,
        after_pass=after_pass,
        inspect_timeout=0.2,
    )

    assert passes == 2
    assert sent == [2, 0]
    assert queue_length(redis_url) == 2
    # The passes are no Celery tasks: nothing was registered or scheduled on the app.
    assert DISPATCH not in celery_app.tasks
    assert not celery_app.conf.beat_schedule
