"""What one worker process keeps between tasks: catalog sessions, stores, the warm model.

A worker is described by a :class:`WorkerConfig` of plain values, which the launcher makes
in the parent without touching CUDA. :class:`WorkerRuntime` turns it into the expensive
parts lazily, in the process that uses them: Celery's ``worker_process_init`` (or else the
first task) loads the checkpoint onto the device, and every later task reuses it. Nothing
is built at import time, and parts built before a fork are rebuilt in the child; the
read-ahead (:mod:`workers.readahead`) is one of those parts.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from storage.base import Storage
from storage.options import StorageOptions
from storage.registry import open_storage
from storage.uri import parse_uri
from workers.errors import WorkerSetupError
from workers.readahead import READ_AHEAD_CAPACITY, ReadAhead, StorageFor

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from ddcolor.pipeline import Colorizer

__all__ = [
    "DEFAULT_CPU_BATCH",
    "DEFAULT_GPU_BATCH",
    "MAX_BATCH_SIZE",
    "RECYCLE_AFTER_OOM",
    "StorageFor",
    "WorkerConfig",
    "WorkerRuntime",
]

logger = logging.getLogger(__name__)

#: Out-of-memory ladder steps after which a worker process replaces itself.
RECYCLE_AFTER_OOM: Final = 3
#: Images per forward of a GPU worker when none is configured: a GPU runs four images in
#: little more time than one (docs/performance.md), and four 1024 px inputs of the large
#: model fit in the memory of any GPU it runs on in fp16; what does not fit is split.
DEFAULT_GPU_BATCH: Final = 4
#: Images per forward of a CPU worker when none is configured: on a CPU a batch gains
#: little (docs/performance.md) and holds more originals in memory.
DEFAULT_CPU_BATCH: Final = 1
#: Most images per forward a worker may be configured with.
MAX_BATCH_SIZE: Final = 64


@dataclass(frozen=True)
class WorkerConfig:
    """Everything a worker process needs, as plain values (picklable, no live objects).

    Attributes:
        database_url: SQLAlchemy URL of the catalog.
        weights: Checkpoint file; None only with ``untrained``.
        untrained: Run the network with random weights (demonstrations and tests); every
            output says so.
        model_name: Registry name the checkpoint must hold, or the model built untrained.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``auto``, ``fp16``, ``bf16`` or ``fp32``: for collections that leave the
            choice to the worker (their precision is ``auto`` or unset).
        backend: What runs the network: ``torch`` or ``onnx`` (ONNX Runtime, fp32).
        size: Input size in pixels for collections that name none; None for the model's
            default (512).
        upsample: How predicted colour is brought to full resolution; None for the default.
        storage: How to reach the stores (S3 endpoint, region, addressing style).
        node_name: Recorded as the worker of every attempt (Celery's ``gpu0@host``).
        cpu_threads: Torch threads for a CPU worker; None leaves torch's default.
        read_ahead: Read and decode the probable next image while the model runs.
        recycle_after_oom: Out-of-memory ladder steps after which the process is replaced.
        batch_size: Images of a collection colorized together, in one forward of the
            network; None for :data:`DEFAULT_GPU_BATCH` on a GPU and
            :data:`DEFAULT_CPU_BATCH` on the CPU.
        retry_backoff: Seconds before the first retry of a task whose catalog, broker or
            store was unavailable (each further retry waits up to twice as long); None for
            ``workers.tasks.RETRY_BACKOFF_S``.
        retry_backoff_max: Seconds that no retry waits longer than; None for
            ``workers.tasks.RETRY_BACKOFF_MAX_S``.

    Raises:
        ValueError: If neither weights nor ``untrained`` are given, or a count is invalid.
    """

    database_url: str
    weights: str | None = None
    untrained: bool = False
    model_name: str | None = None
    device: str = "auto"
    precision: str = "auto"
    backend: str = "torch"
    size: int | None = None
    upsample: str | None = None
    storage: StorageOptions = field(default_factory=StorageOptions)
    node_name: str = field(default_factory=socket.gethostname)
    cpu_threads: int | None = None
    read_ahead: bool = True
    recycle_after_oom: int = RECYCLE_AFTER_OOM
    batch_size: int | None = None
    retry_backoff: int | None = None
    retry_backoff_max: int | None = None

    def __post_init__(self) -> None:
        if self.weights is None and not self.untrained:
            raise ValueError("a worker needs a checkpoint (weights) or untrained=True")
        if self.recycle_after_oom < 1:
            raise ValueError(f"recycle_after_oom must be at least 1: {self.recycle_after_oom}")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError(f"cpu_threads must be at least 1: {self.cpu_threads}")
        if self.batch_size is not None and not 1 <= self.batch_size <= MAX_BATCH_SIZE:
            raise ValueError(f"batch_size must be 1 to {MAX_BATCH_SIZE}: {self.batch_size}")
        for name in ("retry_backoff", "retry_backoff_max"):
            seconds = getattr(self, name)
            if seconds is not None and seconds < 1:
                raise ValueError(f"{name} must be at least 1 second: {seconds}")

    def batch_bound(self) -> int:
        """Return the most images one task may colorize, without touching a device.

        The batch size when one is configured, else the default of the configured device
        (a GPU's when the device is ``auto``): what the worker's main process, which never
        loads the model, assumes after a pool process was killed at the time limit.

        Returns:
            A count, at least 1.
        """
        if self.batch_size is not None:
            return self.batch_size
        return DEFAULT_CPU_BATCH if self.device == "cpu" else DEFAULT_GPU_BATCH


def load_configured_colorizer(config: WorkerConfig) -> Colorizer:
    """Load the model a configuration names (the default model factory of a runtime).

    Args:
        config: The worker's configuration.

    Returns:
        The colorizer, on its device.

    Raises:
        WorkerSetupError: If the weights, device or precision cannot be used.
    """
    import torch

    from ddcolor.errors import DDColorError
    from ddcolor.pipeline import load_colorizer
    from ddcolor.registry import DEFAULT_SIZE, DEFAULT_UPSAMPLE, validate_upsample

    try:
        upsample = validate_upsample(config.upsample or DEFAULT_UPSAMPLE)
    except ValueError as exc:
        raise WorkerSetupError(str(exc)) from exc
    if config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    try:
        return load_colorizer(
            config.weights,
            device=config.device,
            precision=config.precision,
            model=config.model_name,
            untrained=config.untrained,
            size=config.size or DEFAULT_SIZE,
            upsample=upsample,
            backend=config.backend,
        )
    except (DDColorError, OSError, ValueError) as exc:
        raise WorkerSetupError(f"cannot load the model: {exc}") from exc


class WorkerRuntime:
    """The per-process cache of one worker: built lazily, kept warm across tasks.

    Args:
        config: What to build.
        colorizer_factory: Builds the colorizer; defaults to loading ``config``'s weights.
    """

    def __init__(
        self,
        config: WorkerConfig,
        *,
        colorizer_factory: Callable[[WorkerConfig], Colorizer] = load_configured_colorizer,
    ) -> None:
        self.config = config
        self._colorizer_factory = colorizer_factory
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._sessions: sessionmaker[Session] | None = None
        self._stores: dict[str, Storage] = {}
        self._colorizer: Colorizer | None = None
        self._setup_error: WorkerSetupError | None = None
        self._read_ahead: ReadAhead | None = None

    # ---------------------------------------------------------------- the cached parts

    def _forget_parent_copies(self) -> None:
        """Drop parts built before a fork: their connections and threads are the parent's."""
        if os.getpid() == self._pid:
            return
        logger.debug("runtime: forked from %s; rebuilding its parts in %s", self._pid, os.getpid())
        if self._sessions is not None:
            self._sessions.kw["bind"].dispose(close=False)
        self._pid = os.getpid()
        self._sessions = None
        self._stores = {}
        self._read_ahead = None

    def sessions(self) -> sessionmaker[Session]:
        """Return the catalog's session factory, made on first use in this process.

        Returns:
            The session factory.

        Raises:
            WorkerSetupError: If the database URL cannot be used.
        """
        from sqlalchemy.exc import ArgumentError

        from catalog import make_sessionmaker

        with self._lock:
            self._forget_parent_copies()
            if self._sessions is None:
                try:
                    self._sessions = make_sessionmaker(self.config.database_url)
                except ArgumentError as exc:
                    raise WorkerSetupError(f"unusable catalog database URL: {exc}") from exc
            return self._sessions

    def storage_for(self, uri: str) -> Storage:
        """Return the store of a location, one per scheme (the S3 client is made once).

        Args:
            uri: A local path or ``s3://`` location.

        Returns:
            The store.

        Raises:
            InvalidURI: If ``uri`` is not a location.
        """
        scheme = parse_uri(uri).scheme
        with self._lock:
            self._forget_parent_copies()
            store = self._stores.get(scheme)
            if store is None:
                store = open_storage(uri, self.config.storage)
                self._stores[scheme] = store
            return store

    def colorizer(self) -> Colorizer:
        """Return the model, loaded on first use and kept for the life of the process.

        Returns:
            The colorizer.

        Raises:
            WorkerSetupError: If it cannot be loaded (the failure is remembered, so a
                broken configuration is not reloaded for every message).
        """
        with self._lock:
            if self._setup_error is not None:
                raise self._setup_error
            if self._colorizer is None:
                began = time.perf_counter()
                try:
                    self._colorizer = self._colorizer_factory(self.config)
                except WorkerSetupError as exc:
                    self._setup_error = exc
                    raise
                logger.info(
                    "runtime %s: %r ready in %.1f s",
                    self.config.node_name,
                    self._colorizer,
                    time.perf_counter() - began,
                )
            return self._colorizer

    def device_label(self) -> str:
        """Describe the model's device for the catalog (``cuda:0 (NVIDIA A100)``).

        Returns:
            The description.

        Raises:
            WorkerSetupError: If the model cannot be loaded.
        """
        from ddcolor.device import describe_device

        return str(describe_device(self.colorizer().device))

    def batch_size(self) -> int:
        """Return how many images of a collection this worker colorizes per forward.

        Returns:
            The configured size, else the default for the model's device.

        Raises:
            WorkerSetupError: If the model cannot be loaded (when none is configured).
        """
        if self.config.batch_size is not None:
            return self.config.batch_size
        gpu = self.colorizer().device.type == "cuda"
        return DEFAULT_GPU_BATCH if gpu else DEFAULT_CPU_BATCH

    def read_ahead(self) -> ReadAhead | None:
        """Return this process's read-ahead, or None when the configuration turns it off.

        Returns:
            A read-ahead that guesses the next images from the catalog: as many as a batch.
        """
        if not self.config.read_ahead:
            return None
        capacity = max(READ_AHEAD_CAPACITY, self.batch_size())
        with self._lock:
            self._forget_parent_copies()
            if self._read_ahead is None:
                self._read_ahead = ReadAhead(self.storage_for, guess_next=True, capacity=capacity)
            return self._read_ahead

    def warm_up(self) -> None:
        """Build everything now (at process start) instead of in the first task.

        That includes one pass of the network on a blank image, which pays the first
        pass's extra cost (kernel selection, memory pools, on a GPU module loading) here
        rather than on the first image.

        Raises:
            WorkerSetupError: If the model cannot be loaded.
        """
        self.sessions()
        colorizer = self.colorizer()
        try:
            seconds = colorizer.warm_up()
        except Exception as exc:  # noqa: BLE001 - the first image meets it and is recorded
            logger.warning("runtime %s: warm-up pass failed: %s", self.config.node_name, exc)
        else:
            logger.info("runtime %s: warm-up pass %.1f s", self.config.node_name, seconds)

    def close(self) -> None:
        """Release connections and threads (the model stays until the process ends)."""
        with self._lock:
            if self._read_ahead is not None:
                self._read_ahead.close()
                self._read_ahead = None
            if self._sessions is not None and os.getpid() == self._pid:
                self._sessions.kw["bind"].dispose()
            self._sessions = None
