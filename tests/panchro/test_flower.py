"""``panchro flower`` against a real worker on a real Redis, over HTTP and in Chromium.

One Flower process (``python -m panchro.cli flower``) and one stand-in worker (the
launcher's worker arguments, a colorize task without a model) run for the module; the
tasks are sent by the scheduler's real sender, so Flower shows the ``argsrepr`` that the
scheduler sets: the image id, the collection and the source path. Then a real ``panchro
scheduler`` dispatches a submitted collection to the same worker, and Flower must show
its colorize tasks, but neither a dispatch task nor the scheduler as a worker.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from click.testing import CliRunner
from flower_helpers import (
    FINISHED_KEY,
    free_port,
    get_json,
    http_status,
    redis_ids,
    standin_environment,
    standin_worker_command,
    start_process,
    stop_process,
    wait_for,
    wait_for_port,
)
from PIL import Image as PILImage
from submit_helpers import run_submit

from panchro.commands.workers import flower_basic_auth, flower_command, is_loopback
from scheduler.dispatching import TaskRequest
from scheduler.sending import celery_sender
from workers.app import create_app
from workers.devices import node_name

pytestmark = pytest.mark.slow

#: Redis database of this module's broker (the per-test ``redis_url`` databases are
#: handed out from 1 upwards; this module needs one for all its tests).
MODULE_DB = 15
USER, PASSWORD = "archivist", "s3cret-passphrase"
NODE = node_name("cpu", 0, "flower-test")
REQUESTS = [
    TaskRequest(101, 7, "1920s", "album/p001.tif"),
    TaskRequest(102, 7, "1920s", "album/p002.tif"),
    TaskRequest(103, 7, "1920s", "loose/scan 3.png"),
]
#: The collection that ``panchro scheduler`` dispatches, and its number of images.
NIGHT, NIGHT_IMAGES = "night-shift", 3
#: Seconds between two passes of the test's scheduler: several passes run meanwhile.
SCHEDULER_INTERVAL_S = 0.2
#: Seconds Chromium may run scripts of the page before it prints the DOM.
CHROMIUM_BUDGET_MS = 10_000


@dataclass(frozen=True)
class FlowerSite:
    """A running Flower that has seen the stand-in worker run :data:`REQUESTS`."""

    url: str
    log: Path
    #: What ``/api/workers`` listed while the scheduler was running.
    workers_with_scheduler: dict[str, Any]


def _tasks(url: str) -> dict[str, Any]:
    tasks: dict[str, Any] = get_json(f"{url}/api/tasks", user=USER, password=PASSWORD)
    return tasks


def _send_until_flower_sees_events(app: Any, url: str) -> None:
    """Send one probe task at a time until Flower shows one: its event stream is live."""
    send = celery_sender(app)
    probe = 900

    def seen() -> bool:
        nonlocal probe
        if any(task.get("name") for task in _tasks(url).values()):
            return True
        probe += 1
        send([TaskRequest(probe, 1, "probe", f"probe-{probe}.png")])
        return False

    wait_for(seen, "Flower to receive task events")


@pytest.fixture(scope="module")
def flower_site(
    redis_server_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlowerSite]:
    broker_url = f"{redis_server_url}/{MODULE_DB}"
    client = redis.Redis.from_url(broker_url)
    client.flushdb()
    logs = tmp_path_factory.mktemp("flower")
    worker_log, flower_log = logs / "worker.log", logs / "flower.log"
    port = free_port()
    env = standin_environment(broker_url)
    env.update(
        PANCHRO_BROKER_URL=broker_url,
        PANCHRO_FLOWER_USER=USER,
        PANCHRO_FLOWER_PASSWORD=PASSWORD,
    )
    worker = start_process(standin_worker_command(NODE), worker_log, env)
    flower = start_process(
        [sys.executable, "-m", "panchro.cli", "flower", f"--port={port}"],
        flower_log,
        env,
    )
    app = create_app(broker_url=broker_url, task_publish_retry=False)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_port(port, flower, flower_log)
        wait_for(
            lambda: NODE in get_json(f"{url}/api/workers?refresh=1", user=USER, password=PASSWORD),
            f"Flower to list {NODE}; worker log:\n{_tail(worker_log)}",
        )
        _send_until_flower_sees_events(app, url)
        celery_sender(app)(REQUESTS)
        ids = {request.image_id for request in REQUESTS}
        wait_for(
            lambda: ids <= set(redis_ids(broker_url, FINISHED_KEY)),
            f"the worker to run every task; its log:\n{_tail(worker_log)}",
        )
        expected = {request.argsrepr for request in REQUESTS}
        wait_for(
            lambda: (
                expected
                <= {task["args"] for task in _tasks(url).values() if task["state"] == "SUCCESS"}
            ),
            "Flower to see every task succeed",
        )
        seen_workers = _run_the_scheduler(broker_url, url, logs, env)
        yield FlowerSite(url, flower_log, seen_workers)
    finally:
        app.close()
        stop_process(flower)
        stop_process(worker)
        client.flushdb()
        client.close()


def _run_the_scheduler(
    broker_url: str, url: str, logs: Path, env: dict[str, str]
) -> dict[str, Any]:
    """Submit a collection, let ``panchro scheduler`` dispatch it; return Flower's workers."""
    scans = logs / "scans"
    scans.mkdir()
    for number in range(NIGHT_IMAGES):
        PILImage.new("L", (24, 16), 40 * number).save(scans / f"page-{number}.png")
    catalog = f"sqlite:///{logs / 'catalog.sqlite3'}"
    submitted = run_submit(catalog, broker_url, scans, logs / "colour", "--no-dispatch", name=NIGHT)
    assert submitted.exit_code == 0, submitted.output
    log = logs / "scheduler.log"
    argv = [sys.executable, "-m", "panchro.cli", "--database-url", catalog, "scheduler"]
    scheduler = start_process([*argv, f"--interval={SCHEDULER_INTERVAL_S}"], log, env)
    try:

        def night_done() -> bool:
            assert scheduler.poll() is None, _tail(log)
            done = [
                task
                for task in _tasks(url).values()
                if NIGHT in str(task.get("args")) and task["state"] == "SUCCESS"
            ]
            return len(done) == NIGHT_IMAGES

        wait_for(night_done, f"Flower to see {NIGHT} done; scheduler log:\n{_tail(log)}")
        workers: dict[str, Any] = get_json(
            f"{url}/api/workers?refresh=1", user=USER, password=PASSWORD
        )
    finally:
        stop_process(scheduler)
    return workers


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def test_flower_lists_the_worker_by_its_node_name(flower_site: FlowerSite) -> None:
    workers = get_json(f"{flower_site.url}/api/workers?refresh=1", user=USER, password=PASSWORD)

    assert NODE in workers
    queues = [queue["name"] for queue in workers[NODE]["active_queues"]]
    assert queues == ["colorize"]


def test_flower_api_shows_each_task_with_its_collection_and_source(
    flower_site: FlowerSite,
) -> None:
    tasks = _tasks(flower_site.url)
    shown = {
        task["args"]: (task["name"], task["state"], task["worker"])
        for task in tasks.values()
        if "1920s" in str(task.get("args"))
    }

    assert shown == {
        request.argsrepr: ("panchro.colorize", "SUCCESS", NODE) for request in REQUESTS
    }


def test_flower_shows_the_scheduler_colorize_tasks_and_no_dispatch_task(
    flower_site: FlowerSite,
) -> None:
    names = {task.get("name") for task in _tasks(flower_site.url).values()} - {None}
    night = [task for task in _tasks(flower_site.url).values() if NIGHT in str(task.get("args"))]

    assert [task["name"] for task in night] == ["panchro.colorize"] * NIGHT_IMAGES
    assert "panchro.dispatch" not in names
    assert names == {"panchro.colorize"}


def test_flower_does_not_list_the_scheduler_as_a_worker(flower_site: FlowerSite) -> None:
    listed = set(flower_site.workers_with_scheduler)
    listed |= set(get_json(f"{flower_site.url}/api/workers", user=USER, password=PASSWORD))

    assert listed == {NODE}


def test_flower_refuses_requests_without_the_password(flower_site: FlowerSite) -> None:
    assert http_status(f"{flower_site.url}/api/tasks") == 401
    assert http_status(f"{flower_site.url}/api/tasks", user=USER, password="wrong") == 401


def test_flower_tasks_page_renders_the_tasks_in_chromium(
    flower_site: FlowerSite, tmp_path: Path
) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("Chromium is not installed (Debian packages chromium, chromium-driver)")
    address = flower_site.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    done = subprocess.run(
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--virtual-time-budget={CHROMIUM_BUDGET_MS}",
            "--dump-dom",
            f"{address}/tasks",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    dom = done.stdout

    assert "panchro.colorize" in dom, done.stderr[-2000:]
    for request in REQUESTS:
        assert request.relative_path in dom
    assert NODE in dom


def test_flower_command_refuses_a_public_address_without_a_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import click

    monkeypatch.delenv("PANCHRO_FLOWER_USER", raising=False)
    monkeypatch.delenv("PANCHRO_FLOWER_PASSWORD", raising=False)
    group = click.Group("panchro", commands=[flower_command])

    result = CliRunner().invoke(group, ["flower", "--address", "0.0.0.0"])

    assert result.exit_code == 1
    assert "refusing to serve Flower on 0.0.0.0 without a password" in result.output


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.1.1", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("", False),
        ("::", False),
        ("192.168.1.20", False),
        ("flower.example.org", False),
    ],
)
def test_is_loopback_accepts_only_this_machines_addresses(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def test_flower_basic_auth_needs_both_user_and_password() -> None:
    import click

    assert flower_basic_auth(None, None) is None
    assert flower_basic_auth("a", "twelve-chars") == "a:twelve-chars"
    with pytest.raises(click.ClickException, match="both"):
        flower_basic_auth("a", None)
    with pytest.raises(click.ClickException, match="may not contain"):
        flower_basic_auth("a:b", "twelve-chars")


@pytest.mark.parametrize("password", ["x", "eleven-char"])
def test_flower_passwords_shorter_than_twelve_characters_are_refused(password: str) -> None:
    import click

    with pytest.raises(click.ClickException, match="use at least 12"):
        flower_basic_auth("archivist", password)


def test_settings_refuse_a_short_flower_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PANCHRO_FLOWER_PASSWORD", "hunter2")
    group = click.Group("panchro", commands=[flower_command])

    result = CliRunner().invoke(group, ["flower"])

    assert result.exit_code == 1
    assert "flower_password: the Flower password has 7 characters; use at least 12" in (
        result.output
    )
