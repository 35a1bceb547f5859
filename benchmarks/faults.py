"""Every fault of the fault suite on a real cluster, with what it cost: lost, duplicated, time.

The cluster is the fault suite's (``tests/faults``): a PostgreSQL cluster of its own
(``initdb``/``pg_ctl``, as the ``postgres`` OS user when run as root), a Redis with an
append-only file fsynced on every write, a moto S3 server behind the fault-injecting
proxy, and the real ``panchro scheduler`` and ``panchro workers --cpu 2`` (the untrained
tiny model, collections at 256 px). The workers' time limits are short (25 s soft, 30 s
hard) so that the stuck image ends soon; the visibility timeout is the production one,
an hour, and the scheduler runs at its default interval (10 s).

Each fault gets its own collection (36 good and 4 corrupt images by default), injected
half-way through it, and the collection must end. The table says, per fault: the images
it hit (running when it began, or tried and not done while it lasted), good images lost,
done twice, or written partly, the seconds from the fault's end until the last affected
image ended, and whether every promise of ``fault_checks.verify`` held.

Usage::

    python benchmarks/faults.py                         # every fault, about 10 minutes
    python benchmarks/faults.py --faults pool,node,redis --good 36 --corrupt 4

Where no private PostgreSQL cluster can be started, ``PANCHRO_BENCH_DATABASE_URL`` (a
PostgreSQL URL whose role may create databases; default the local test server) holds the
catalog and the PostgreSQL fault is left out. The disk-full fault needs root (it mounts a
small tmpfs) and is left out otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(_ROOT), str(_ROOT / "tests" / "faults"), str(_ROOT / "tests" / "e2e")]

from bench_servers import free_port, fresh_database, wait_for  # noqa: E402
from fault_checks import Verdict  # noqa: E402
from fault_cluster import FaultCluster, new_bucket, running_cluster  # noqa: E402
from fault_images import SourceFile, collection_files  # noqa: E402
from fault_scenarios import (  # noqa: E402
    Scenario,
    disk_full,
    kill_node,
    kill_pool_process,
    restart_postgres,
    restart_redis,
    run_fault,
    s3_errors,
    s3_outage,
    stuck_file,
    stuck_image,
)
from fault_services import (  # noqa: E402
    AofRedis,
    PrivatePostgres,
    SmallDisk,
    postgres_unavailable,
    small_disk_unavailable,
)
from s3_fault_proxy import FaultProxy  # noqa: E402

#: PostgreSQL used when no private cluster can be started and PANCHRO_BENCH_DATABASE_URL
#: is unset.
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: Every fault, in the order they run (the harmless ones first).
FAULTS = ("pool", "node", "redis", "postgres", "s3-outage", "s3-errors", "disk-full", "stuck")
#: Settings of the workers: short time limits, the production visibility timeout.
SETTINGS = {
    "PANCHRO_SOFT_TIME_LIMIT": "25",
    "PANCHRO_TIME_LIMIT": "30",
    "PANCHRO_VISIBILITY_TIMEOUT": "3600",
}
#: Seconds between two dispatch passes: ``panchro scheduler``'s default.
SCHEDULER_INTERVAL_S = 10.0
#: Size of the small disk of the disk-full fault, in KiB.
SMALL_DISK_KIB = 8192
#: Seconds the moto server may take to start.
MOTO_START_S = 60.0


@contextmanager
def _moto() -> Iterator[str]:
    """A moto S3 server on a free loopback port; yields its endpoint URL."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _answers(port) or proc.poll() is not None, "moto", MOTO_START_S)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _answers(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _plan(
    faults: list[str],
    files: list[SourceFile],
    redis: AofRedis,
    postgres: PrivatePostgres | None,
    work: Path,
) -> list[tuple[str, Scenario, dict[str, Any], SmallDisk | None]]:
    """Each fault asked for that can run here: its scenario, ``run_fault`` options, disk."""
    stuck = stuck_file(files)
    simple: dict[str, Scenario] = {
        "pool": kill_pool_process,
        "node": kill_node,
        "redis": restart_redis(redis),
        "s3-outage": s3_outage,
        "s3-errors": s3_errors,
    }
    plan: list[tuple[str, Scenario, dict[str, Any], SmallDisk | None]] = []
    for fault in faults:
        if fault in simple:
            plan.append((fault, simple[fault], {}, None))
        elif fault == "postgres":
            if postgres is None:
                print(f"postgres: left out ({postgres_unavailable()})", file=sys.stderr)
                continue
            plan.append((fault, restart_postgres(postgres), {}, None))
        elif fault == "disk-full":
            reason = small_disk_unavailable()
            if reason:
                print(f"disk-full: left out ({reason})", file=sys.stderr)
                continue
            disk = SmallDisk(work / "disk", SMALL_DISK_KIB)
            plan.append((fault, disk_full(disk), {"output": str(disk.mount_point)}, disk))
        elif fault == "stuck":
            options = {"stall": stuck, "expect_failed": {stuck.relative: "time limit"}}
            plan.append((fault, stuck_image(stuck), options, None))
    return plan


def _run_one(
    cluster: FaultCluster,
    fault: str,
    scenario: Scenario,
    files: list[SourceFile],
    options: dict[str, Any],
    disk: SmallDisk | None,
) -> Verdict:
    if disk is None:
        return run_fault(cluster, fault, scenario, files=files, **options)
    disk.mount()
    try:
        return run_fault(cluster, fault, scenario, files=files, **options)
    finally:
        disk.unmount()


def _table(verdicts: list[Verdict]) -> str:
    lines = [
        "| fault | images affected | lost | duplicated | half-written | recovery (s) | outcome |",
        "|---|---|---|---|---|---|---|",
    ]
    for verdict in verdicts:
        lines.append(
            f"| {verdict.fault} | {verdict.affected} | {len(verdict.lost)} | "
            f"{len(verdict.duplicated)} | {len(verdict.half_written)} | "
            f"{verdict.recovery_s:.1f} | {verdict.outcome} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the faults asked for and print the table (Markdown).

    Args:
        argv: Command-line arguments; None reads ``sys.argv``.

    Returns:
        0 when every fault was recovered from, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated faults")
    parser.add_argument("--good", type=int, default=36, help="good images per collection")
    parser.add_argument("--corrupt", type=int, default=4, help="corrupt images per collection")
    parser.add_argument(
        "--interval", type=float, default=SCHEDULER_INTERVAL_S, help="dispatch interval (s)"
    )
    args = parser.parse_args(argv)
    faults = [name.strip() for name in args.faults.split(",") if name.strip()]
    unknown = sorted(set(faults) - set(FAULTS))
    if unknown:
        parser.error(f"unknown faults {', '.join(unknown)}; choose from {', '.join(FAULTS)}")
    logging.basicConfig(level=logging.ERROR)
    files = collection_files(args.good, args.corrupt)
    verdicts: list[Verdict] = []
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="panchro-faults-")))
        endpoint = stack.enter_context(_moto())
        client, bucket = new_bucket(endpoint, "panchro-bench-faults")
        host, port = endpoint.removeprefix("http://").split(":")
        proxy = stack.enter_context(FaultProxy(host, int(port)))
        redis = AofRedis(work / "redis", free_port())
        redis.start()
        stack.callback(redis.stop)
        postgres: PrivatePostgres | None = None
        if postgres_unavailable() is None:
            postgres = PrivatePostgres(free_port())
            stack.callback(postgres.destroy)
            postgres.init()
            postgres.start()
            database_url = postgres.create_database()
        else:
            admin = os.environ.get("PANCHRO_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
            database_url = stack.enter_context(fresh_database(admin))
        cluster = stack.enter_context(
            running_cluster(
                work,
                database_url=database_url,
                broker_url=redis.url,
                s3_client=client,
                s3_endpoint_url=endpoint,
                proxy=proxy,
                bucket=bucket,
                settings=SETTINGS,
                scheduler_interval=args.interval,
            )
        )
        for fault, scenario, options, disk in _plan(faults, files, redis, postgres, work):
            verdicts.append(_run_one(cluster, fault, scenario, files, options, disk))
            for problem in verdicts[-1].problems():
                print(f"  {problem}", file=sys.stderr)
    print(
        f"\n{len(files)} images per fault ({args.good} good, {args.corrupt} corrupt), "
        f"panchro workers --cpu 2 at 256 px, scheduler every {args.interval:g} s, "
        f"visibility timeout {SETTINGS['PANCHRO_VISIBILITY_TIMEOUT']} s\n"
    )
    print(_table(verdicts))
    return 0 if all(not verdict.problems() for verdict in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
