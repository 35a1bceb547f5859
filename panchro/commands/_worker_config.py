"""The plain-value configuration of one worker process, built from the settings.

``panchro workers`` builds it for every worker before starting any (so a bad setting
fails the command once), and each ``panchro worker-child`` builds its own from the
``PANCHRO_*`` variables it was started with.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    from panchro.settings import Settings
    from workers.runtime import WorkerConfig

__all__ = ["worker_config"]


def worker_config(
    settings: Settings, *, node: str, untrained: bool = False, cpu_threads: int | None = None
) -> WorkerConfig:
    """Build the plain-value configuration of one worker process from the settings.

    Args:
        settings: The validated settings (the worker's device is ``settings.device``).
        node: The worker's node name, recorded as the worker of every attempt.
        untrained: Run with random weights instead of a checkpoint.
        cpu_threads: Torch threads of a CPU worker; None leaves torch's default.

    Returns:
        The configuration.

    Raises:
        click.ClickException: If no checkpoint is configured (and ``untrained`` is not
            set) or the configured one does not exist.
    """
    from workers.runtime import WorkerConfig

    if settings.weights is not None and not untrained and not settings.weights.is_file():
        raise click.ClickException(f"checkpoint {settings.weights} does not exist")
    try:
        return WorkerConfig(
            database_url=settings.database_url,
            weights=None if settings.weights is None else str(settings.weights),
            untrained=untrained,
            device=settings.device,
            precision=settings.precision,
            backend=settings.backend,
            size=settings.worker_size,
            storage=settings.storage_options(),
            node_name=node,
            cpu_threads=cpu_threads,
            retry_backoff=settings.retry_backoff,
            retry_backoff_max=settings.retry_backoff_max,
            batch_size=settings.batch_size,
        )
    except ValueError as exc:
        hint = "set PANCHRO_WEIGHTS or --weights (see `panchro doctor`)"
        raise click.ClickException(f"{exc}: {hint}") from exc
