"""``panchro doctor``: what is installed and what can be reached, one line per check."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import click

from panchro.options import json_options, wants_json

if TYPE_CHECKING:
    from panchro.settings import Settings
    from storage.options import StorageOptions

#: Seconds a network check may take before it counts as unreachable.
CHECK_TIMEOUT = 3.0

Outcome = Literal["ok", "warn", "fail"]


@dataclass(frozen=True)
class Check:
    """The outcome of one check, as printed and as ``--json``."""

    name: str
    outcome: Outcome
    detail: str


def check_torch() -> list[Check]:
    """Describe the PyTorch build and every device it can use.

    Returns:
        One check for the build and one per visible device (the CPU included).
    """
    import torch

    from ddcolor.device import describe_device

    if torch.version.hip:
        build = f"ROCm {torch.version.hip}"
    elif torch.version.cuda:
        build = f"CUDA {torch.version.cuda}"
    else:
        build = "CPU only"
    checks = [Check("torch", "ok", f"PyTorch {torch.__version__}, {build} build")]
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    for index in range(count):
        info = describe_device(f"cuda:{index}")
        memory = torch.cuda.get_device_properties(index).total_memory / 2**30
        checks.append(Check(f"device {index}", "ok", f"{info} with {memory:.1f} GiB"))
    cpu = describe_device("cpu")
    note = "" if count else "; no GPU visible, workers will run on the CPU (slow)"
    checks.append(Check("cpu", "ok" if count else "warn", f"{cpu.name}{note}"))
    return checks


def check_weights(weights: Path | None, weights_dir: Path) -> Check:
    """Validate the checkpoint the commands would use, or say where one is expected.

    That is the configured one, else the one ``panchro weights fetch`` kept.

    Args:
        weights: The configured checkpoint file, if any.
        weights_dir: The folder of fetched checkpoints, used when none is configured.

    Returns:
        The outcome, naming the model and the file's sha256 when it is valid.
    """
    from ddcolor.checkpoints import read_checkpoint
    from ddcolor.errors import DDColorError
    from ddcolor.headers import SAFETENSORS_SUFFIX, TORCH_SUFFIXES
    from panchro.weights import find_fetched

    source = "configured"
    if weights is None:
        fetched = find_fetched(weights_dir)
        if fetched is None:
            suffixes = {*TORCH_SUFFIXES, SAFETENSORS_SUFFIX}
            found = sorted(
                path.name
                for path in (weights_dir.iterdir() if weights_dir.is_dir() else ())
                if path.suffix in suffixes
            )
            return Check(
                "weights",
                "warn",
                f"no checkpoint configured (PANCHRO_WEIGHTS or --weights) and none fetched "
                f"into {weights_dir} (files there: {', '.join(found) or 'none'}); "
                "see README, 'Model weights'.",
            )
        weights, source = fetched.path, f"fetched into {weights_dir}"
    try:
        _, info = read_checkpoint(weights)
    except DDColorError as exc:
        return Check("weights", "fail", str(exc))
    detail = f"{info.model_name} ({info.arch}) sha256 {info.sha256}, {source}: {weights}"
    return Check("weights", "ok", detail)


def check_database(url: str) -> Check:
    """Connect to the catalog and report its schema revision.

    Args:
        url: SQLAlchemy URL of the catalog.

    Returns:
        ``ok`` with the revision, ``warn`` when the schema is missing, ``fail`` when the
        database cannot be reached.
    """
    from sqlalchemy import create_engine, inspect, text

    from panchro.settings import redact_url

    shown = redact_url(url)
    args = {"connect_timeout": int(CHECK_TIMEOUT)} if url.startswith("postgresql") else {}
    engine = create_engine(url, connect_args=args)
    try:
        with engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return Check("database", "warn", f"{shown}: no schema; run `panchro db upgrade`")
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except Exception as exc:  # any driver error means "not usable"; say which
        return Check("database", "fail", f"{shown}: {type(exc).__name__}: {exc}".strip())
    finally:
        engine.dispose()
    return Check("database", "ok", f"{shown} at revision {revision}")


def check_broker(url: str) -> Check:
    """Ping the Redis broker.

    Args:
        url: The broker URL.

    Returns:
        ``ok`` when Redis answers, ``warn`` otherwise (the embedded mode needs no broker).
    """
    import redis

    try:
        redis.Redis.from_url(url, socket_timeout=CHECK_TIMEOUT).ping()
    except Exception as exc:  # connection, auth or protocol error: report, do not crash
        return Check("broker", "warn", f"{url}: {type(exc).__name__}: {exc}")
    return Check("broker", "ok", f"{url} answers")


def check_s3(options: StorageOptions) -> Check:
    """List the buckets the credentials see on the S3 endpoint.

    Args:
        options: The S3 endpoint, region and addressing style.

    Returns:
        ``ok`` with the bucket count, ``warn`` when S3 cannot be used.
    """
    from storage.s3 import S3Storage

    where = options.endpoint_url or "AWS S3"
    quick = replace(
        options, max_attempts=1, connect_timeout=CHECK_TIMEOUT, read_timeout=CHECK_TIMEOUT
    )
    try:
        buckets = S3Storage(quick).visible_buckets()
    except Exception as exc:  # no credentials, unreachable, denied: all mean "not usable"
        return Check("s3", "warn", f"{where}: {type(exc).__name__}: {exc}")
    return Check("s3", "ok", f"{where}: {buckets} bucket(s) visible")


def run_checks(settings: Settings) -> list[Check]:
    """Run every check with the given settings.

    Args:
        settings: The validated configuration.

    Returns:
        The checks in the order they are shown.
    """
    return [
        *check_torch(),
        check_weights(settings.weights, settings.weights_dir),
        check_database(settings.database_url),
        check_broker(settings.broker_url),
        check_s3(settings.storage_options()),
    ]


_MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL"}


@click.command("doctor")
@click.option("--weights", type=click.Path(path_type=Path), help="Checkpoint file to validate.")
@json_options("Print the checks as a JSON list.")
@click.pass_context
def doctor(
    ctx: click.Context, weights: Path | None, as_json: bool, report_format: str | None
) -> None:
    """Check the torch build (CUDA/ROCm/CPU), devices, weights, database, broker and S3.

    Exits with status 1 when a check fails (a damaged checkpoint, an unreachable
    database); warnings (no GPU, no broker for the embedded mode) do not.
    """
    from panchro.context import load_settings

    checks = run_checks(load_settings(ctx, weights=weights))
    if wants_json(as_json, report_format):
        click.echo(json.dumps([asdict(check) for check in checks], indent=2))
    else:
        width = max(len(check.name) for check in checks)
        for check in checks:
            click.echo(f"[{_MARKS[check.outcome]}] {check.name:<{width}}  {check.detail}")
    if any(check.outcome == "fail" for check in checks):
        ctx.exit(1)
