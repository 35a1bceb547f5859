"""Tests of workers.app.create_app, the Celery app the scheduler sends through."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scheduler import SCHEDULER_QUEUE
from workers.app import create_app
from workers.broker import (
    COLORIZE_QUEUE,
    PRIORITY_TRANSPORT_OPTIONS,
    REDELIVERY_TRANSPORT_OPTIONS,
)
from workers.broker import SCHEDULER_QUEUE as APP_SCHEDULER_QUEUE
from workers.names import COLORIZE, DISPATCH


def test_create_app_configures_reliable_json_only_delivery() -> None:
    conf = create_app(broker_url="redis://127.0.0.1:6379/9").conf

    assert conf.broker_url == "redis://127.0.0.1:6379/9"
    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_ignore_result is True
    assert conf.result_backend is None
    assert conf.worker_cancel_long_running_tasks_on_connection_loss is True
    assert conf.worker_send_task_events is True
    assert conf.task_send_sent_event is True
    assert conf.broker_connection_retry_on_startup is True
    assert conf.worker_proc_alive_timeout > 60


def test_create_app_sets_a_visibility_timeout_longer_than_the_hard_limit_everywhere() -> None:
    conf = create_app(broker_url="redis://x", soft_time_limit=50, time_limit=60).conf

    assert (conf.task_soft_time_limit, conf.task_time_limit) == (50, 60)
    assert conf.broker_transport_options["visibility_timeout"] == 120
    assert conf.result_backend_transport_options["visibility_timeout"] == 120
    assert conf.visibility_timeout == 120


def test_create_app_merges_extra_transport_options_with_the_visibility_timeout() -> None:
    conf = create_app(
        broker_url="redis://x", visibility_timeout=7200, broker_transport_options={"max_retries": 2}
    ).conf

    assert conf.broker_transport_options == {
        **REDELIVERY_TRANSPORT_OPTIONS,
        **PRIORITY_TRANSPORT_OPTIONS,
        "max_retries": 2,
        "visibility_timeout": 7200,
    }


@pytest.mark.parametrize(
    ("soft", "hard", "visibility"),
    [(60, 60, None), (70, 60, None), (0, 60, None), (50, 60, 60), (50, 60, 30)],
)
def test_create_app_refuses_inconsistent_limits(
    soft: float, hard: float, visibility: int | None
) -> None:
    with pytest.raises(ValueError):
        create_app(
            broker_url="redis://x",
            soft_time_limit=soft,
            time_limit=hard,
            visibility_timeout=visibility,
        )


def test_create_app_routes_colorize_and_dispatch_to_their_queues() -> None:
    app = create_app(broker_url="redis://x")

    def queue(name: str) -> str:
        return str(app.amqp.router.route({}, name, (), {})["queue"].name)

    assert queue(COLORIZE) == COLORIZE_QUEUE == "colorize"
    assert queue(DISPATCH) == APP_SCHEDULER_QUEUE == SCHEDULER_QUEUE == "scheduler"
    assert app.conf.task_default_queue == COLORIZE_QUEUE


def test_create_app_lets_options_override_settings() -> None:
    conf = create_app(broker_url="redis://x", task_publish_retry=False).conf
    assert conf.task_publish_retry is False


def test_producer_side_imports_neither_torch_nor_the_model() -> None:
    code = (
        "import sys, scheduler, workers.app; "
        "bad = [m for m in ('torch', 'ddcolor') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_only_a_workers_app_requeues_rejected_messages_in_front() -> None:
    from workers.redelivery import TRANSPORT, Transport
    from workers.runtime import WorkerConfig
    from workers.tasks import build_worker_app

    url = "redis://127.0.0.1:6379/0"
    worker = build_worker_app(
        WorkerConfig(database_url="sqlite://", untrained=True), broker_url=url
    )
    producer = create_app(broker_url=url)

    assert worker.conf.broker_transport == TRANSPORT
    assert issubclass(worker.connection_for_write().get_transport_cls(), Transport)
    # Flower recognises the broker by the scheme of the producer's URI.
    assert producer.connection_for_write().as_uri().startswith("redis://")
    assert any("RestoreAfterReconnect" in str(step) for step in worker.steps["consumer"])
