"""Helpers of the metrics tests: a served endpoint, scrapes over HTTP, parsed samples."""

from __future__ import annotations

import base64
import socket
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.orm import Session, sessionmaker

from panchro.metrics import MetricsServer, PanchroCollector, broker_options, build_registry
from workers.app import create_app

#: Credentials of the test endpoints.
USER, PASSWORD = "prometheus", "correct-horse-battery"

#: A sample: its name and its labels, sorted.
SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(frozen=True)
class Scrape:
    """One parsed scrape.

    Attributes:
        families: Family name to type (``gauge``, ``counter``, ``histogram``).
        samples: Every sample's value by name and labels.
    """

    families: dict[str, str]
    samples: dict[SampleKey, float]

    def value(self, name: str, **labels: str) -> float:
        """Return the value of the sample with exactly these labels."""
        return self.samples[(name, tuple(sorted(labels.items())))]

    def labelled(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        """Return the samples of one name by their labels."""
        return {labels: v for (n, labels), v in self.samples.items() if n == name}


@contextmanager
def serve(
    sessions: sessionmaker[Session], broker_url: str, *, inspect_timeout: float = 0.1
) -> Iterator[str]:
    """Serve the metrics of a catalog and broker on a free loopback port, with basic auth.

    Yields:
        The endpoint's URL.
    """
    app = create_app(broker_url=broker_url, **broker_options(0.5))
    collector = PanchroCollector(
        sessions, app, window=timedelta(minutes=5), inspect_timeout=inspect_timeout
    )
    server = MetricsServer(
        build_registry(collector), address="127.0.0.1", port=0, credentials=(USER, PASSWORD)
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}/metrics"
    finally:
        server.shutdown()
        thread.join(timeout=5)


def closed_port() -> int:
    """Return a loopback port on which nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(
    url: str, user: str | None = USER, password: str = PASSWORD
) -> tuple[int, str, dict[str, str]]:
    """GET a URL, with basic auth unless ``user`` is None; return status, body, headers."""
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


def scrape(url: str) -> Scrape:
    """Scrape an endpoint with the test credentials and parse it as Prometheus does."""
    status, body, _ = get(url)
    assert status == 200, body
    families: dict[str, str] = {}
    samples: dict[SampleKey, float] = {}
    for family in text_string_to_metric_families(body):
        families[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return Scrape(families, samples)
