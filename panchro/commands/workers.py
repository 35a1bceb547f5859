"""``panchro workers`` (one supervised Celery worker per device) and ``panchro flower``.

``panchro workers`` probes the GPUs in a short child process, plans one worker per
selected GPU (or ``--cpu N`` CPU workers on a host without one), and supervises them
with :class:`workers.launcher.Supervisor`. Each worker is this program again, started as
the hidden ``panchro worker-child`` command with only its GPU visible. It receives the
launcher's validated settings as ``PANCHRO_*`` variables (so secrets in URLs never appear
on a command line), builds its ``WorkerConfig`` and Celery app from them, and runs
``celery worker`` in the same process.

``panchro flower`` runs Flower in this process against the broker of the settings, with
the basic auth of ``PANCHRO_FLOWER_USER`` and ``PANCHRO_FLOWER_PASSWORD``; it refuses to
listen beyond the loopback interface without them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from panchro.commands._worker_config import worker_config
from panchro.logs import current_log_format, log_format_option, loglevel_option
from panchro.options import (
    backend_option,
    batch_option,
    precision_option,
    time_limit_options,
    untrained_option,
    weights_option,
)

if TYPE_CHECKING:
    from panchro.settings import Settings
    from workers.devices import WorkerSlot
    from workers.launcher import ChildSpec

logger = logging.getLogger(__name__)

#: Prefix of the environment variables that ``Settings`` reads.
SETTINGS_PREFIX = "PANCHRO_"
#: Port Flower listens on by default (Flower's own default).
FLOWER_PORT = 5555
#: Address Flower listens on by default: this machine only.
FLOWER_ADDRESS = "127.0.0.1"
#: Variable through which Flower takes its basic-auth credentials: unlike a command-line
#: option, it is not visible to other users in the process list.
FLOWER_AUTH_VARIABLE = "FLOWER_BASIC_AUTH"
#: Columns of Flower's tasks page: ``args`` shows each image's id, collection and source
#: path (the ``argsrepr`` the scheduler sets), ``exception`` the reason of a failure.
FLOWER_TASK_COLUMNS = "name,state,args,received,runtime,retries,worker,exception,uuid"
#: KiB per MiB, to turn ``--max-memory-per-child`` into Celery's unit.
KIB_PER_MIB = 1024


def settings_environment(settings: Settings, base: Mapping[str, str]) -> dict[str, str]:
    """Return ``base`` with every setting written as the ``PANCHRO_*`` variable it comes from.

    A child process that builds ``Settings()`` from this environment gets the same
    values as the parent, command-line overrides included.

    Args:
        settings: The validated settings of the parent.
        base: The environment to start from.

    Returns:
        A new environment; variables of settings that are unset are removed.
    """
    env = dict(base)
    for name, value in settings.model_dump().items():
        key = f"{SETTINGS_PREFIX}{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    return env


def worker_child_argv(
    slot: WorkerSlot,
    *,
    loglevel: str,
    max_memory_per_child_kib: int | None = None,
    untrained: bool = False,
    log_format: str = "text",
) -> tuple[str, ...]:
    """Return the command line of one worker process: this CLI's ``worker-child``.

    Args:
        slot: The worker.
        loglevel: Celery's log level name.
        log_format: ``text`` or ``json`` (``panchro.logs``).
        max_memory_per_child_kib: Memory limit of the pool process in KiB, or None.
        untrained: Run with random weights.

    Returns:
        The program and its arguments; settings travel in the environment instead.
    """
    argv = [
        sys.executable,
        "-m",
        "panchro.cli",
        "worker-child",
        f"--node={slot.node_name}",
        f"--loglevel={loglevel}",
        f"--log-format={log_format}",
    ]
    if max_memory_per_child_kib is not None:
        argv.append(f"--max-memory-per-child={max_memory_per_child_kib}")
    if slot.kind == "cpu" and slot.threads is not None:
        argv.append(f"--cpu-threads={slot.threads}")
    if untrained:
        argv.append("--untrained")
    return tuple(argv)


def plan_children(
    settings: Settings,
    slots: Sequence[WorkerSlot],
    *,
    base_env: Mapping[str, str],
    loglevel: str = "INFO",
    max_memory_per_child_kib: int | None = None,
    untrained: bool = False,
) -> list[ChildSpec]:
    """Turn planned workers into the processes the launcher runs.

    Each worker's configuration is built here first, so that a missing checkpoint fails
    the command before any process starts.

    Args:
        settings: The validated settings.
        slots: The workers (``workers.devices.plan_workers``).
        base_env: The environment the workers start from.
        loglevel: Celery's log level name.
        max_memory_per_child_kib: Memory limit of each pool process in KiB, or None.
        untrained: Run with random weights.

    Returns:
        One spec per worker: its command line, and its environment with only its device
        visible and the settings as ``PANCHRO_*`` variables.

    Raises:
        click.ClickException: If the configuration of a worker is invalid.
        DeviceError: If a worker's GPU is not among the launcher's visible ones.
    """
    from workers.devices import child_environment
    from workers.launcher import ChildSpec

    children = []
    for slot in slots:
        pinned = settings.model_copy(update={"device": slot.device})
        cpu_threads = slot.threads if slot.kind == "cpu" else None
        worker_config(pinned, node=slot.node_name, untrained=untrained, cpu_threads=cpu_threads)
        argv = worker_child_argv(
            slot,
            loglevel=loglevel,
            max_memory_per_child_kib=max_memory_per_child_kib,
            untrained=untrained,
            log_format=current_log_format(),
        )
        env = child_environment(slot, settings_environment(pinned, base_env))
        children.append(ChildSpec(slot.node_name, argv, env))
    return children


@click.command("workers")
@click.option(
    "--devices",
    default="all",
    show_default=True,
    metavar="all|LIST",
    help="GPUs to run a worker on: all, or numbers and ranges such as 0,1 or 0-3 "
    "(as nvidia-smi numbers them, within CUDA_VISIBLE_DEVICES if set).",
)
@click.option(
    "--cpu",
    "cpu_workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="On a host without a GPU, run N CPU workers (far slower). Ignored where a GPU is "
    "found, so one command line serves a mixed fleet.",
)
@weights_option
@precision_option
@backend_option
@batch_option
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    metavar="MiB",
    help="Replace a worker's pool process after its current task once its resident memory "
    "exceeds this many MiB (guards against slow leaks). Default: no limit.",
)
@untrained_option
@loglevel_option(help_text="Log level of the workers.")
@log_format_option
@time_limit_options
@click.pass_context
def workers_command(
    ctx: click.Context,
    devices: str,
    cpu_workers: int | None,
    weights: Path | None,
    precision: str | None,
    batch: int | None,
    max_memory_per_child: int | None,
    untrained: bool,
    loglevel: str,
    soft_time_limit: float | None,
    time_limit: float | None,
    visibility_timeout: int | None,
) -> None:
    """Run one Celery worker per GPU (or N CPU workers), restarting any that die.

    \b
    Each worker sees only its own GPU and is named gpu<N>@<host> (cpu<N>@<host>).
    SIGTERM or Ctrl-C: warm shutdown, running images finish first.
    A second signal: cold shutdown, running images go back to the queue.
    Before starting any worker, checks the checkpoint, the catalog, the broker and
    the stores of the active collections; exits with one line (status 1) if one
    cannot be used. Exits when every worker has stopped: status 78 if one stopped
    because it cannot work (storage credentials missing or refused, other weights
    than a collection's), 1 if one was given up after failing again and again.

    \b
    Examples:
      panchro workers --weights ddcolor_modelscope.pth        # one worker per GPU
      panchro workers --devices 0,1 --precision bf16          # only GPUs 0 and 1
      panchro workers --cpu 2 --untrained                     # a demo on a laptop
      PANCHRO_BROKER_URL=redis://broker:6379/0 \\
      PANCHRO_DATABASE_URL=postgresql+psycopg://panchro@db/panchro panchro workers
    """
    from panchro.context import load_settings
    from panchro.preflight import preflight
    from workers.devices import plan_workers, probe_devices
    from workers.errors import DeviceError
    from workers.launcher import Supervisor, exit_status
    from workers.releaser import NodeReleaser

    # The launcher's own lines (each start and exit) are what an operator watches: they
    # show even at the command line's default level, WARNING.
    for name in (__name__, "workers.launcher", "workers.devices"):
        launcher_logger = logging.getLogger(name)
        if launcher_logger.getEffectiveLevel() > logging.INFO:
            launcher_logger.setLevel(logging.INFO)
    settings = load_settings(
        ctx,
        weights=weights,
        precision=precision,
        batch_size=batch,
        soft_time_limit=soft_time_limit,
        time_limit=time_limit,
        visibility_timeout=visibility_timeout,
    )
    preflight(settings, untrained=untrained)
    base_env = settings_environment(settings, os.environ)
    try:
        inventory = probe_devices(env=base_env)
        slots = plan_workers(inventory, devices=devices, cpu_workers=cpu_workers)
        children = plan_children(
            settings,
            slots,
            base_env=base_env,
            loglevel=loglevel,
            max_memory_per_child_kib=None
            if max_memory_per_child is None
            else max_memory_per_child * KIB_PER_MIB,
            untrained=untrained,
        )
    except DeviceError as exc:
        raise click.ClickException(str(exc)) from exc
    logger.info(
        "starting %d worker(s) on %s: %s",
        len(children),
        inventory.describe(),
        ", ".join(child.name for child in children),
    )
    releaser = NodeReleaser(settings.database_url)
    try:
        outcomes = Supervisor(children, release=releaser).run()
    finally:
        releaser.close()
    ctx.exit(exit_status(outcomes))


@click.command("worker-child", hidden=True)
@click.option("--node", required=True, help="Celery node name, e.g. gpu0@render-07.")
@loglevel_option(help_text="Celery's log level.")
@log_format_option
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    metavar="KiB",
    help="Resident memory of the pool process, in KiB, after which it is replaced.",
)
@click.option("--cpu-threads", type=click.IntRange(min=1), help="Torch threads of a CPU worker.")
@click.option("--untrained", is_flag=True, help="Run with random weights.")
@click.pass_context
def worker_child_command(
    ctx: click.Context,
    node: str,
    loglevel: str,
    max_memory_per_child: int | None,
    cpu_threads: int | None,
    untrained: bool,
) -> None:
    """Run one Celery worker on the device this process sees (started by `panchro workers`).

    Exits with ``EX_CONFIG`` (78) when the worker stopped because it cannot work.
    """
    from panchro.context import load_settings
    from panchro.logs import json_in_celery
    from workers.commandline import node_log_format, worker_argv
    from workers.tasks import EX_CONFIG, PoolProcess, build_worker_app

    settings = load_settings(ctx)
    config = worker_config(settings, node=node, untrained=untrained, cpu_threads=cpu_threads)
    pool = PoolProcess(node_name=node, recycle_after_oom=config.recycle_after_oom)
    app = build_worker_app(
        config,
        broker_url=settings.broker_url,
        **settings.celery_limits(),
        pool=pool,
        worker_log_format=node_log_format(node),
        worker_task_log_format=node_log_format(node, task=True),
    )
    argv = worker_argv(node, loglevel=loglevel, max_memory_per_child_kib=max_memory_per_child)
    if current_log_format() == "json":
        # Celery's start-up banner is not a log line: left out, so every line is JSON.
        argv = ["--quiet", *argv]
        json_in_celery({"worker": node})
    app.worker_main(argv=argv)
    if pool.stop_reason is not None:
        ctx.exit(EX_CONFIG)


def is_loopback(address: str) -> bool:
    """Tell whether Flower listening on ``address`` is reachable from this machine only.

    Args:
        address: An IP address or ``localhost``; an empty string means every interface.

    Returns:
        True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1).
    """
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def flower_basic_auth(user: str | None, password: str | None) -> str | None:
    """Return Flower's ``user:password`` credential from the settings.

    Args:
        user: ``Settings.flower_user``.
        password: ``Settings.flower_password``.

    Returns:
        ``user:password``, or None when neither is set.

    Raises:
        click.ClickException: If only one is set, the password is shorter than
            ``MIN_PASSWORD_LENGTH`` characters, or a value cannot be passed to Flower.
    """
    if not user and not password:
        return None
    if not user or not password:
        raise click.ClickException(
            "set both PANCHRO_FLOWER_USER and PANCHRO_FLOWER_PASSWORD, or neither"
        )
    if ":" in user or "," in user or "," in password:
        raise click.ClickException(
            "the Flower user may not contain ':' or ',' and the password may not contain ','"
        )
    from panchro.settings import check_flower_password

    try:
        check_flower_password(password)
    except ValueError as exc:
        raise click.ClickException(f"PANCHRO_FLOWER_PASSWORD: {exc}") from exc
    return f"{user}:{password}"


def flower_argv(*, address: str, port: int) -> list[str]:
    """Return the arguments of Celery's ``flower`` command for ``app.start()``.

    Args:
        address: Address to listen on.
        port: Port to listen on.

    Returns:
        ``["flower", "--address=...", "--port=...", "--tasks_columns=..."]``.
    """
    return [
        "flower",
        f"--address={address}",
        f"--port={port}",
        f"--tasks_columns={FLOWER_TASK_COLUMNS}",
    ]


@click.command("flower")
@click.option(
    "--address",
    default=FLOWER_ADDRESS,
    show_default=True,
    help="Address to listen on. Anything but a loopback address needs "
    "PANCHRO_FLOWER_USER and PANCHRO_FLOWER_PASSWORD.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=FLOWER_PORT,
    show_default=True,
    help="Port to listen on.",
)
@click.option(
    "--user",
    help="Basic-auth user of the dashboard. Env: PANCHRO_FLOWER_USER. The password is "
    "read from PANCHRO_FLOWER_PASSWORD only, never from the command line.",
)
@click.pass_context
def flower_command(ctx: click.Context, address: str, port: int, user: str | None) -> None:
    """Run the Flower dashboard for the workers and tasks of the broker.

    Equivalent to `celery --broker=URL flower --address=... --port=...
    --tasks_columns=...` with FLOWER_BASIC_AUTH=user:password in its environment.
    """
    from panchro.context import load_settings
    from workers.app import create_app

    settings = load_settings(ctx, flower_user=user)
    auth = flower_basic_auth(settings.flower_user, settings.flower_password)
    if auth is None and not is_loopback(address):
        raise click.ClickException(
            f"refusing to serve Flower on {address or 'every interface'} without a password: "
            "set PANCHRO_FLOWER_USER and PANCHRO_FLOWER_PASSWORD, or use --address 127.0.0.1"
        )
    if auth is not None:
        os.environ[FLOWER_AUTH_VARIABLE] = auth
    elif FLOWER_AUTH_VARIABLE not in os.environ:
        logger.warning("Flower has no password; it listens on %s only", address)
    app = create_app(broker_url=settings.broker_url)
    status: Any = app.start(argv=flower_argv(address=address, port=port))
    ctx.exit(int(status or 0))
