"""Tests of ``panchro metrics``: the real endpoint, scraped over HTTP and parsed.

The catalog is a seeded PostgreSQL database (``tests/catalog/metrics_rows.py`` says what
it holds) and the broker a real Redis, with colorize messages sent by Celery itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from metrics_helpers import PASSWORD, USER, closed_port, get, scrape, serve
from sqlalchemy.orm import Session, sessionmaker

from catalog import make_sessionmaker
from panchro.cli import cli
from tests.catalog.metrics_rows import GPU, Seeded, seed_metrics_rows
from workers.app import create_app
from workers.names import COLORIZE

#: The Grafana dashboard of deploy/.
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "panchro-dashboard.json"
#: A metric name of panchro's in a PromQL text.
METRIC_NAME = re.compile(r"\bpanchro_[a-z0-9_]+\b")


@pytest.fixture
def sessions(empty_postgres_catalog: str) -> Iterator[sessionmaker[Session]]:
    """The empty PostgreSQL catalog's session factory."""
    sessions = make_sessionmaker(empty_postgres_catalog)
    yield sessions
    sessions.kw["bind"].dispose()


@pytest.fixture
def seeded(sessions: sessionmaker[Session]) -> Seeded:
    """The catalog of ``metrics_rows``."""
    return seed_metrics_rows(sessions)


def _deliver(client: redis.Redis, tag: str) -> None:
    """Move the oldest waiting message to kombu's unacked hash, as a delivery does."""
    raw = client.rpop("colorize")
    assert isinstance(raw, bytes)
    message = json.loads(raw)
    client.hset("unacked", tag, json.dumps([message, "colorize", "colorize"]))
    client.zadd("unacked_index", {tag: time.time()})


def test_scrape_needs_the_password(sessions: sessionmaker[Session], redis_url: str) -> None:
    with serve(sessions, redis_url) as url:
        status, _, headers = get(url, user=None)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Basic")
        assert get(url, password="wrong-password-here")[0] == 401
        assert get(url, user="someone-else")[0] == 401
        assert get(url.replace("/metrics", "/other"))[0] == 404
        assert get(url)[0] == 200


def test_scrape_reports_the_catalog_queue_and_workers(
    sessions: sessionmaker[Session], seeded: Seeded, redis_url: str, broker: redis.Redis
) -> None:
    producer = create_app(broker_url=redis_url)
    for image_id in (seeded.queued, *seeded.pending):
        producer.send_task(COLORIZE, args=[image_id])
    _deliver(broker, "tag-1")

    with serve(sessions, redis_url) as url:
        got = scrape(url)

    assert got.value("panchro_catalog_up") == 1
    assert got.value("panchro_broker_up") == 1
    images = {
        dict(k)["status"]: v
        for k, v in got.labelled("panchro_images").items()
        if dict(k)["collection"] == "1920s"
    }
    assert images == {
        "pending": 2,
        "queued": 1,
        "running": 1,
        "done": 4,
        "failed": 2,
        "skipped": 0,
        "cancelled": 0,
    }
    assert got.value("panchro_images", collection="empty", status="done") == 0
    assert got.families["panchro_images_done"] == "counter"
    assert got.value("panchro_images_done_total", collection="1920s") == 4
    assert got.value("panchro_images_per_second", collection="1920s") == pytest.approx(3 / 300)

    cpu = {"input_size": "512", "device": "cpu", "precision": "fp32"}
    assert got.families["panchro_image_duration_seconds"] == "histogram"
    assert got.value("panchro_image_duration_seconds_bucket", le="0.5", **cpu) == 1
    assert got.value("panchro_image_duration_seconds_bucket", le="1.0", **cpu) == 2
    assert got.value("panchro_image_duration_seconds_bucket", le="2.0", **cpu) == 3
    assert got.value("panchro_image_duration_seconds_bucket", le="+Inf", **cpu) == 3
    assert got.value("panchro_image_duration_seconds_count", **cpu) == 3
    assert got.value("panchro_image_duration_seconds_sum", **cpu) == pytest.approx(2.6)
    gpu = {"input_size": "768", "device": GPU, "precision": "fp16"}
    assert got.value("panchro_image_duration_seconds_bucket", le="30.0", **gpu) == 0
    assert got.value("panchro_image_duration_seconds_bucket", le="60.0", **gpu) == 1

    assert got.value("panchro_oom_steps_total", collection="1920s", input_size="1024") == 2
    assert got.value("panchro_oom_steps_total", collection="1920s", input_size="768") == 1
    assert got.value("panchro_lost_attempts_total", collection="1920s") == 2
    assert got.value("panchro_lost_attempts_total", collection="empty") == 0
    failed = {
        (dict(k)["collection"], dict(k)["code"]): v
        for k, v in got.labelled("panchro_failed_images").items()
    }
    assert failed == {("1920s", "oom.floor"): 1, ("1920s", "unknown"): 1}

    assert got.value("panchro_queue_messages", collection="1920s", state="waiting") == 2
    assert got.value("panchro_queue_messages", collection="1920s", state="unacked") == 1
    assert got.value("panchro_queue_messages", collection="empty", state="waiting") == 0
    assert {dict(k)["collection"] for k in got.labelled("panchro_queue_messages")} == {
        "1920s",
        "empty",
    }
    assert got.value("panchro_workers_up") == 0
    assert got.value("panchro_workers_warm") == 0
    assert got.value("panchro_scrape_duration_seconds") > 0


def test_a_down_broker_or_catalog_leaves_the_other_metrics(
    sessions: sessionmaker[Session], seeded: Seeded, redis_url: str
) -> None:
    unused_port = closed_port()
    down_broker = f"redis://127.0.0.1:{unused_port}/0"
    with serve(sessions, down_broker) as url:
        for _ in range(2):  # the server survives and answers again
            got = scrape(url)
            assert got.value("panchro_broker_up") == 0
            assert got.value("panchro_catalog_up") == 1
            assert got.value("panchro_images_done_total", collection="1920s") == 4
            assert "panchro_queue_messages" not in got.families
            assert "panchro_workers_up" not in got.families

    down_catalog = make_sessionmaker(
        f"postgresql+psycopg://postgres@127.0.0.1:{unused_port}/none?connect_timeout=1"
    )
    create_app(broker_url=redis_url).send_task(COLORIZE, args=[seeded.queued])
    with serve(down_catalog, redis_url) as url:
        got = scrape(url)
    assert got.value("panchro_catalog_up") == 0
    assert got.value("panchro_broker_up") == 1
    assert "panchro_images" not in got.families
    # Without the catalog a message's collection is unknown: the total still comes.
    assert got.value("panchro_queue_messages", collection="", state="waiting") == 1


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({}, ["--address", "0.0.0.0"], "refusing to serve metrics on 0.0.0.0 without a password"),
        (
            {"PANCHRO_METRICS_USER": "prometheus", "PANCHRO_METRICS_PASSWORD": "short"},
            [],
            "at least 12 characters",
        ),
        ({"PANCHRO_METRICS_USER": "prometheus"}, [], "set both PANCHRO_METRICS_USER"),
    ],
)
def test_metrics_command_refuses_weak_or_missing_auth(
    env: dict[str, str], args: list[str], message: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PANCHRO_METRICS_USER", raising=False)
    monkeypatch.delenv("PANCHRO_METRICS_PASSWORD", raising=False)
    result = CliRunner().invoke(cli, ["metrics", *args], env=env)
    assert result.exit_code == 1
    assert message in result.output


def _dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL text of a Grafana dashboard: panel targets and variable queries."""
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            queries.append(variable["query"]["query"])
    return queries


def test_grafana_dashboard_queries_only_metrics_the_endpoint_serves(
    sessions: sessionmaker[Session], seeded: Seeded, redis_url: str
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    with serve(sessions, redis_url) as url:
        got = scrape(url)
    served = set(got.families) | {name for name, _ in got.samples}

    queries = _dashboard_queries(dashboard)
    named = {name for query in queries for name in METRIC_NAME.findall(query)}
    assert all(METRIC_NAME.search(query) for query in queries)
    assert named <= served, f"the dashboard names metrics nobody serves: {named - served}"
    # And the other way round: every family the endpoint serves has a panel.
    unused = {family for family in got.families if not any(n.startswith(family) for n in named)}
    assert not unused, f"metrics without a panel: {unused}"
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert all(panel["datasource"]["uid"] == "${datasource}" for panel in dashboard["panels"])


def test_panchro_metrics_serves_until_interrupted(
    empty_postgres_catalog: str, redis_url: str
) -> None:
    env = {
        **os.environ,
        "PANCHRO_DATABASE_URL": empty_postgres_catalog,
        "PANCHRO_BROKER_URL": redis_url,
        "PANCHRO_METRICS_USER": USER,
        "PANCHRO_METRICS_PASSWORD": PASSWORD,
    }
    argv = [sys.executable, "-m", "panchro.cli", "metrics", "--port", "0"]
    proc = subprocess.Popen(
        [*argv, "--inspect-timeout", "0.1"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
        # Ctrl-C must reach the child even where the tests run with SIGINT ignored (a
        # background job); Python then installs its own handler.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        match = re.search(r"(http://127\.0\.0\.1:\d+/metrics) \(basic auth\)", line)
        assert match, line + proc.stderr.read()
        got = scrape(match.group(1))
        assert got.value("panchro_catalog_up") == 1
        assert got.value("panchro_broker_up") == 1
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
