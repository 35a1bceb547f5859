"""``panchro metrics``: serve panchro's own Prometheus metrics over HTTP, with basic auth.

The metrics are read from the catalog, the broker and the live workers at each scrape
(:mod:`panchro.metrics`; every metric is listed in ``docs/metrics.md``). The basic-auth
credentials come from ``PANCHRO_METRICS_USER`` and ``PANCHRO_METRICS_PASSWORD`` (at least
12 characters); without them the command serves only on a loopback address.
"""

from __future__ import annotations

import logging
from datetime import timedelta

import click

from panchro.cli_support import fail_on
from panchro.commands._support import INTERRUPTED_EXIT, open_catalog

logger = logging.getLogger(__name__)

#: Port ``panchro metrics`` listens on by default.
METRICS_PORT = 9808
#: Address it listens on by default: this machine only.
METRICS_ADDRESS = "127.0.0.1"
#: Seconds over which images per second are measured by default.
DEFAULT_WINDOW_S = 300.0


@click.command("metrics")
@click.option(
    "--address",
    default=METRICS_ADDRESS,
    show_default=True,
    help="Address to listen on; any other than a loopback one needs PANCHRO_METRICS_USER "
    "and PANCHRO_METRICS_PASSWORD.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=METRICS_PORT,
    show_default=True,
    help="Port to listen on (0: any free port, printed at start).",
)
@click.option(
    "--window",
    type=click.FloatRange(min=1.0),
    default=DEFAULT_WINDOW_S,
    show_default=True,
    metavar="SECONDS",
    help="Span over which panchro_images_per_second is measured.",
)
@click.option(
    "--inspect-timeout",
    type=click.FloatRange(min=0.05, max=10.0),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Time the workers get to say whether they are up and warm (every scrape waits it).",
)
@click.pass_context
def metrics_command(
    ctx: click.Context, address: str, port: int, window: float, inspect_timeout: float
) -> None:
    """Serve panchro's Prometheus metrics on http://ADDRESS:PORT/metrics.

    Images by collection and status, images done and per second, seconds per image by
    input size, device and precision, out-of-memory steps by size, lost tries, queue depth
    (waiting and unacknowledged messages) and which workers are up and warm; each scrape
    reads the catalog and the broker. Metrics of a source that does not answer are left
    out and its panchro_catalog_up or panchro_broker_up is 0. Every metric is described
    in docs/metrics.md.

    \b
    Examples:
      panchro metrics                                   this machine only, no password
      PANCHRO_METRICS_USER=prometheus PANCHRO_METRICS_PASSWORD=... \\
        panchro metrics --address 0.0.0.0               reachable by Prometheus
      curl -u prometheus:... http://127.0.0.1:9808/metrics
    """
    from catalog.metrics import DURATION_BUCKETS_S
    from panchro.commands.workers import is_loopback
    from panchro.context import load_settings
    from panchro.metrics import MetricsServer, PanchroCollector, broker_options, build_registry
    from workers.app import create_app

    settings = load_settings(ctx)
    credentials = None
    if settings.metrics_user and settings.metrics_password:
        credentials = (settings.metrics_user, settings.metrics_password)
    elif not is_loopback(address):
        raise click.ClickException(
            f"refusing to serve metrics on {address or 'every interface'} without a password: "
            "set PANCHRO_METRICS_USER and PANCHRO_METRICS_PASSWORD, or use --address 127.0.0.1"
        )
    app = create_app(broker_url=settings.broker_url, **settings.celery_limits(), **broker_options())
    with open_catalog(settings.database_url) as sessions, fail_on("serving metrics"):
        collector = PanchroCollector(
            sessions,
            app,
            window=timedelta(seconds=window),
            inspect_timeout=inspect_timeout,
            buckets=DURATION_BUCKETS_S,
        )
        try:
            server = MetricsServer(
                build_registry(collector), address=address, port=port, credentials=credentials
            )
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {address}:{port}: {exc}") from exc
        auth = "basic auth" if credentials else "no password"
        click.echo(f"serving metrics on http://{address}:{server.port}/metrics ({auth})", err=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            ctx.exit(INTERRUPTED_EXIT)
        finally:
            server.shutdown()
