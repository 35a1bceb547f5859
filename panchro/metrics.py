"""panchro's own Prometheus metrics: the catalog, the broker and the workers, read per scrape.

:class:`PanchroCollector` builds every metric family when Prometheus scrapes, from three
sources, each asked with a short timeout and each allowed to fail alone:

- the catalog (:func:`catalog.metrics.read_metrics`): images by status, done images and
  images per second, failed images by failure code, seconds per image by input
  size/device/precision, out-of-memory ladder steps by size, lost tries;
- the broker (:func:`scheduler.reaping.read_broker`): colorize messages waiting in the
  queue and delivered but not acknowledged, by collection;
- the live workers (one ``panchro_warm`` broadcast, :mod:`workers.warmth`): which are up,
  which have their model loaded.

A source that does not answer sets its ``panchro_catalog_up`` or ``panchro_broker_up``
gauge to 0 and leaves out its families; the others still come. :class:`MetricsServer`
serves them on ``/metrics`` behind HTTP basic auth. ``docs/metrics.md`` lists every
metric; ``panchro metrics`` is the command that runs all this.
"""

from __future__ import annotations

import base64
import binascii
import logging
import secrets
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from catalog import transaction
from catalog.metrics import (
    DURATION_BUCKETS_S,
    RATE_WINDOW,
    MetricsSnapshot,
    collections_of_images,
    read_metrics,
)
from scheduler.reaping import BrokerSnapshot, read_broker
from workers.warmth import WARM_COMMAND

if TYPE_CHECKING:
    from celery import Celery
    from sqlalchemy.orm import Session, sessionmaker

__all__ = [
    "BROKER_TIMEOUT_S",
    "INSPECT_TIMEOUT_S",
    "METRICS_PATH",
    "MetricsServer",
    "PanchroCollector",
    "broker_options",
    "build_registry",
]

logger = logging.getLogger(__name__)

#: Path the metrics are served on.
METRICS_PATH = "/metrics"
#: Seconds the workers get to answer the warmth broadcast (every scrape waits this long).
INSPECT_TIMEOUT_S = 1.0
#: Seconds to connect to, or wait for, the broker before it counts as down.
BROKER_TIMEOUT_S = 1.0
#: Label value of queued messages whose image the catalog does not know (or is down).
UNKNOWN_COLLECTION = ""


def broker_options(timeout: float = BROKER_TIMEOUT_S) -> dict[str, Any]:
    """Return ``create_app()`` settings that make a down broker fail fast, not retry.

    Args:
        timeout: Seconds to connect to or wait for Redis.

    Returns:
        Celery settings for a scrape's short, single attempts.
    """
    return {
        "broker_connection_retry": False,
        "broker_connection_max_retries": 0,
        "broker_connection_timeout": timeout,
        "broker_transport_options": {
            "max_retries": 0,
            "socket_timeout": timeout,
            "socket_connect_timeout": timeout,
        },
    }


def _le(bound: float) -> str:
    """Write a bucket bound as Prometheus clients do (``1.0``, ``0.25``)."""
    text: str = floatToGoString(bound)  # type: ignore[no-untyped-call]
    return text


def _images(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    by_status = GaugeMetricFamily(
        "panchro_images", "Images of a collection in each status.", labels=["collection", "status"]
    )
    done = CounterMetricFamily(
        "panchro_images_done",
        "Images of a collection done (falls only when done images are sent back by a retry).",
        labels=["collection"],
    )
    rate = GaugeMetricFamily(
        "panchro_images_per_second",
        f"Images of a collection done per second over the last {snapshot.window_s:g} s.",
        labels=["collection"],
    )
    for name, counts in snapshot.images.items():
        for status, count in counts.items():
            by_status.add_metric([name, status], count)
        done.add_metric([name], counts.get("done", 0))
        rate.add_metric([name], snapshot.done_in_window.get(name, 0) / snapshot.window_s)
    failed = GaugeMetricFamily(
        "panchro_failed_images",
        "Failed images of a collection by failure code (docs/failures.md); only codes that occur.",
        labels=["collection", "code"],
    )
    for (name, code), count in sorted(snapshot.failed.items()):
        failed.add_metric([name, code], count)
    yield from (by_status, done, rate, failed)


def _work(snapshot: MetricsSnapshot) -> Iterator[Metric]:
    durations = HistogramMetricFamily(
        "panchro_image_duration_seconds",
        "Seconds per done image (its last try), by model input size, device and precision.",
        labels=["input_size", "device", "precision"],
    )
    for h in snapshot.durations:
        pairs = zip(h.bounds, h.bucket_counts, strict=True)
        buckets = [(_le(bound), count) for bound, count in pairs]
        buckets.append(("+Inf", h.count))
        labels = [str(h.input_size or ""), h.device or "", h.precision or ""]
        durations.add_metric(labels, buckets, h.sum_s)
    oom = CounterMetricFamily(
        "panchro_oom_steps",
        "Tries that ran out of memory at an input size and went down the size ladder.",
        labels=["collection", "input_size"],
    )
    for (name, size), count in sorted(snapshot.oom_steps.items()):
        oom.add_metric([name, str(size)], count)
    lost = CounterMetricFamily(
        "panchro_lost_attempts",
        "Tries given up because no live worker held them (worker killed or vanished).",
        labels=["collection"],
    )
    for name in snapshot.images:
        lost.add_metric([name], snapshot.lost_attempts.get(name, 0))
    yield from (durations, oom, lost)


def _queue(broker: BrokerSnapshot, collection_of: dict[int, str], names: Iterable[str]) -> Metric:
    queue = GaugeMetricFamily(
        "panchro_queue_messages",
        "Colorize messages in the broker: waiting in the queue, or delivered to a worker "
        "and not acknowledged (unacked), by collection.",
        labels=["collection", "state"],
    )
    waiting = Counter(collection_of.get(i, UNKNOWN_COLLECTION) for i in broker.waiting_image_ids)
    # Messages whose image id could not be read (or that name an image twice) count as
    # unknown.
    waiting[UNKNOWN_COLLECTION] += broker.waiting - sum(waiting.values())
    unacked = Counter(
        UNKNOWN_COLLECTION
        if d.image_id is None
        else collection_of.get(d.image_id, UNKNOWN_COLLECTION)
        for d in broker.delivered
    )
    # Every collection of the catalog, at zero when it has no message; unknown ones only
    # when there are some.
    shown = set(names) | {name for name in (*waiting, *unacked) if waiting[name] or unacked[name]}
    for name in sorted(shown):
        queue.add_metric([name, "waiting"], waiting.get(name, 0))
        queue.add_metric([name, "unacked"], unacked.get(name, 0))
    return queue


def _workers(replies: Sequence[dict[str, Any]]) -> Iterator[Metric]:
    answers: dict[str, dict[str, Any]] = {}
    for reply in replies:
        for node, answer in reply.items():
            if isinstance(answer, dict) and answer.get("colorize") is True:
                answers[node] = answer
    warm = GaugeMetricFamily(
        "panchro_worker_warm",
        "1 while a live colorize worker has its model loaded, 0 while it loads.",
        labels=["worker"],
    )
    for node in sorted(answers):
        warm.add_metric([node], 1 if answers[node].get("warm") else 0)
    yield GaugeMetricFamily(
        "panchro_workers_up", "Colorize workers that answered.", value=len(answers)
    )
    yield GaugeMetricFamily(
        "panchro_workers_warm",
        "Colorize workers that answered with their model loaded.",
        value=sum(1 for answer in answers.values() if answer.get("warm")),
    )
    yield warm


class PanchroCollector(Collector):
    """Reads the catalog, the broker and the workers at each scrape (see the module text).

    Args:
        sessions: The catalog.
        app: A Celery app of the broker, made with :func:`broker_options`.
        window: Span over which images per second are measured.
        inspect_timeout: Seconds the workers get to answer.
        buckets: Upper bounds of the seconds-per-image buckets.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        app: Celery,
        *,
        window: timedelta = RATE_WINDOW,
        inspect_timeout: float = INSPECT_TIMEOUT_S,
        buckets: Sequence[float] = DURATION_BUCKETS_S,
    ) -> None:
        self.sessions = sessions
        self.app = app
        self.window = window
        self.inspect_timeout = inspect_timeout
        self.buckets = tuple(buckets)
        # One scrape at a time: concurrent scrapes would only multiply the queries.
        self._lock = threading.Lock()

    def describe(self) -> Iterable[Metric]:
        """Describe nothing up front, so registering does not scrape.

        Returns:
            An empty list.
        """
        return []

    def collect(self) -> Iterable[Metric]:
        """Read every source now and return the metric families.

        Returns:
            The families; those of a source that failed are left out.
        """
        with self._lock:
            began = time.perf_counter()
            families = list(self._collect())
            families.append(
                GaugeMetricFamily(
                    "panchro_scrape_duration_seconds",
                    "Seconds this scrape took to read the catalog, broker and workers.",
                    value=time.perf_counter() - began,
                )
            )
            return families

    def _collect(self) -> Iterator[Metric]:
        broker = self._read_broker()
        yield GaugeMetricFamily(
            "panchro_broker_up", "1 if the broker answered this scrape.", value=int(bool(broker))
        )
        snapshot: MetricsSnapshot | None = None
        collection_of: dict[int, str] = {}
        try:
            with transaction(self.sessions) as db:
                snapshot = read_metrics(db, window=self.window, bounds=self.buckets)
                if broker is not None:
                    ids = broker.image_ids
                    collection_of = collections_of_images(db, ids)
        except Exception as exc:  # noqa: BLE001 - a scrape reports a down catalog, never fails
            logger.warning("metrics: cannot read the catalog: %s", exc)
        yield GaugeMetricFamily(
            "panchro_catalog_up",
            "1 if the catalog answered this scrape.",
            value=int(snapshot is not None),
        )
        if snapshot is not None:
            yield from _images(snapshot)
            yield from _work(snapshot)
        if broker is not None:
            yield _queue(broker, collection_of, snapshot.images if snapshot else ())
            replies = self._ask_workers()
            if replies is not None:
                yield from _workers(replies)

    def _read_broker(self) -> BrokerSnapshot | None:
        try:
            return read_broker(self.app)
        except Exception as exc:  # noqa: BLE001 - a scrape reports a down broker, never fails
            logger.warning("metrics: cannot read the broker: %s", exc)
            return None

    def _ask_workers(self) -> list[dict[str, Any]] | None:
        try:
            replies = self.app.control.broadcast(
                WARM_COMMAND, reply=True, timeout=self.inspect_timeout
            )
        except Exception as exc:  # noqa: BLE001 - a scrape reports a down broker, never fails
            logger.warning("metrics: cannot ask the workers: %s", exc)
            return None
        return list(replies or [])


def build_registry(collector: Collector) -> CollectorRegistry:
    """Return a registry that holds only ``collector``.

    Args:
        collector: panchro's collector.

    Returns:
        The registry to serve.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def _authorized(header: str | None, credentials: tuple[str, str] | None) -> bool:
    """Tell whether an ``Authorization`` header carries the basic-auth credentials."""
    if credentials is None:
        return True
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, _, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return False
    # Both compared in full, whatever the first says: the time taken tells nothing.
    same_user = secrets.compare_digest(user.encode(), credentials[0].encode())
    same_password = secrets.compare_digest(password.encode(), credentials[1].encode())
    return same_user and same_password


class MetricsServer:
    """A small HTTP server of one registry on ``/metrics``, behind HTTP basic auth.

    Args:
        registry: What to serve.
        address: The address to listen on.
        port: The port; 0 picks a free one (see :attr:`port`).
        credentials: ``(user, password)`` every request must carry; None serves anyone
            (only sensible on a loopback address).

    Raises:
        OSError: If the address cannot be bound.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        address: str,
        port: int,
        credentials: tuple[str, str] | None,
    ) -> None:
        # A class per server: http.server makes a handler per request from the class.
        handler = type(
            "_Handler", (_MetricsHandler,), {"registry": registry, "credentials": credentials}
        )
        self._server = ThreadingHTTPServer((address, port), handler)
        self._server.daemon_threads = True

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    def serve_forever(self) -> None:
        """Serve requests until :meth:`shutdown` is called from another thread."""
        self._server.serve_forever()

    def shutdown(self) -> None:
        """Stop :meth:`serve_forever` and close the socket."""
        self._server.shutdown()
        self._server.server_close()


class _MetricsHandler(BaseHTTPRequestHandler):
    registry: CollectorRegistry
    credentials: tuple[str, str] | None
    server_version = "panchro-metrics"

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if not _authorized(self.headers.get("Authorization"), self.credentials):
            self._reply(401, b"authentication required\n", "text/plain; charset=utf-8")
            return
        if self.path.split("?", 1)[0] != METRICS_PATH:
            self._reply(404, f"see {METRICS_PATH}\n".encode(), "text/plain; charset=utf-8")
            return
        try:
            encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
            body = encoder(self.registry)
        except Exception:  # noqa: BLE001 - one bad scrape must not stop the server
            logger.exception("metrics: the scrape failed")
            self._reply(500, b"scrape failed; see the server's log\n", "text/plain")
            return
        self._reply(200, body, content_type)

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="panchro metrics"')
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        logger.debug("metrics: %s " + format, self.address_string(), *args)
