"""Helpers shared by the worker tests (a uniquely named module, importable from them).

Small stand-in networks with injected behaviour (out of memory above a size, NaN under
reduced precision, waiting for a read, an interrupt), stores that fail or report their
reads, sample originals, and catalog rows. Run as a script, it is the Celery worker of
the end-to-end test: ``python workers_helpers.py <broker url> <database url> <node>
[<batch size>]``.
"""

from __future__ import annotations

import hashlib
import socket
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from torch import nn

from catalog import (
    Attempt,
    Image,
    ScannedImage,
    create_or_get_collection,
    queue_pending,
    register_images,
    transaction,
)
from ddcolor.pipeline import Colorizer
from storage import LocalStorage, StorageUnavailable
from workers.process import Outcome, process_image

#: Seconds a test waits for something another thread does; a guard against hanging, not a
#: measurement.
WAIT_S = 60.0
#: Node name of the worker that ``process_locally`` runs as.
WORKER = "cpu0@test"


class StubNet(nn.Module):
    """Bx3xSxS grey RGB in, Bx2xSxS ab out: a fixed 1x1 convolution, instant on any CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 2, 1)
        with torch.no_grad():
            self.conv.weight.fill_(10.0)
            self.conv.bias.copy_(torch.tensor([5.0, -8.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class OutOfMemoryAbove(nn.Module):
    """Raises torch.OutOfMemoryError for inputs larger than ``limit`` pixels."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner = inner
        self.limit = limit
        self.sizes: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(int(x.shape[-1]))
        if x.shape[-1] > self.limit:
            raise torch.OutOfMemoryError(f"injected: {x.shape[-1]} px is over {self.limit}")
        out: torch.Tensor = self.inner(x)
        return out


class NaNUnderAutocast(nn.Module):
    """Returns NaN ab whenever reduced precision (autocast) is on, like an fp16 overflow."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_autocast_enabled(x.device.type):
            return torch.full((x.shape[0], 2, *x.shape[2:]), float("nan"))
        out: torch.Tensor = self.inner(x)
        return out


class WaitsOnFirstForward(nn.Module):
    """The first forward waits (bounded) for an event and records whether it came."""

    def __init__(self, inner: nn.Module, event: threading.Event) -> None:
        super().__init__()
        self.inner = inner
        self.event = event
        self.event_seen: list[bool] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.event_seen:
            self.event_seen.append(self.event.wait(WAIT_S))
        out: torch.Tensor = self.inner(x)
        return out


class InterruptOnForward(nn.Module):
    """Raises KeyboardInterrupt on the forward numbered ``when`` (1-based), like Ctrl-C."""

    def __init__(self, inner: nn.Module, when: int) -> None:
        super().__init__()
        self.inner = inner
        self.when = when
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.when:
            raise KeyboardInterrupt
        out: torch.Tensor = self.inner(x)
        return out


def stub_colorizer(model: nn.Module | None = None, **options: Any) -> Colorizer:
    """A colorizer around a stand-in network, on the CPU at 256 px in fp32 by default."""
    settings: dict[str, Any] = {"device": "cpu", "precision": "fp32", "size": 256}
    settings.update(options)
    return Colorizer(model or StubNet(), model_name="stub", **settings)


class ObservedStorage(LocalStorage):
    """Local storage that tells a callback about every read, and can fail them.

    Args:
        on_read: Called with the location and the thread's name before each read.
        unavailable: Reads of locations for which this returns True raise ``error``.
        error: What a failed read raises; by default ``StorageUnavailable``.
    """

    def __init__(
        self,
        on_read: Callable[[str, str], None] | None = None,
        unavailable: Callable[[str], bool] | None = None,
        error: Exception | None = None,
    ) -> None:
        self.on_read = on_read
        self.unavailable = unavailable
        self.error = error
        self.reads: list[tuple[str, str]] = []

    def read(self, uri: Any) -> bytes:
        where = str(uri)
        thread = threading.current_thread().name
        self.reads.append((where, thread))
        if self.on_read is not None:
            self.on_read(where, thread)
        if self.unavailable is not None and self.unavailable(where):
            raise self.error or StorageUnavailable(f"injected: the store of {where} is unreachable")
        return super().read(uri)


def process_locally(sessions: sessionmaker[Session], image_id: int, **options: Any) -> Outcome:
    """Run ``process_image`` on local storage with the stand-in network, as worker ``WORKER``.

    Args:
        sessions: The catalog.
        image_id: The image.
        **options: Other arguments of ``process_image`` (``storage_for``...), or overrides.

    Returns:
        What ``process_image`` did.
    """
    settings: dict[str, Any] = {
        "sessions": sessions,
        "storage_for": lambda uri: LocalStorage(),
        "colorizer": stub_colorizer(),
        "worker": WORKER,
    }
    settings.update(options)
    return process_image(image_id, **settings)


def write_gray_png(path: Path, size: tuple[int, int] = (56, 40)) -> Path:
    """Write an 8-bit grayscale PNG with a gradient (width, height)."""
    width, height = size
    ramp = np.linspace(0, 255, width * height, dtype=np.float64).reshape(height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(ramp.astype(np.uint8), mode="L").save(path)
    return path


def write_gray16_tiff(path: Path, size: tuple[int, int] = (48, 36)) -> Path:
    """Write a 16-bit grayscale TIFF (width, height) using the whole 16-bit range."""
    width, height = size
    ramp = np.linspace(0, 65535, width * height, dtype=np.float64).reshape(height, width)
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(ramp.astype(np.uint16)).save(path, format="TIFF")
    return path


def write_corrupt_png(path: Path) -> Path:
    """Write a file that starts like a PNG and then is garbage (a truncated upload)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + b"garbage" * 20)
    return path


def closed_port() -> int:
    """A loopback port nothing listens on (free when asked)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def add_collection(
    sessions: sessionmaker[Session],
    source: Path,
    output: Path,
    names: Iterable[str],
    *,
    name: str = "scans",
    queue: bool = True,
    outputs: dict[str, Path] | None = None,
    **settings: Any,
) -> dict[str, int]:
    """Register files of ``source`` as a collection and queue them, as a dispatcher would.

    Args:
        sessions: The catalog.
        source: The folder holding the originals.
        output: The output folder.
        names: Relative paths of the originals to register.
        name: The collection's name.
        queue: Move the images to ``queued`` (else they stay ``pending``).
        outputs: Output paths to use instead of the mirrored ones, by relative path.
        **settings: Collection settings (``input_size``, ``checkpoint_sha256``...).

    Returns:
        The image id of each relative path.
    """
    settings.setdefault("input_size", 256)
    store = LocalStorage()
    rows = []
    for relative in names:
        info = store.stat(str(source / relative))
        rows.append(
            ScannedImage(
                source_uri=str(source / relative),
                relative_path=relative,
                output_uri=str((outputs or {}).get(relative, output / relative)),
                size=info.size,
                checksum=info.checksum,
                checksum_kind=info.checksum_kind,
            )
        )
    with transaction(sessions) as db:
        collection, _ = create_or_get_collection(db, name, str(source), str(output), **settings)
        register_images(db, collection.id, rows)
        if queue:
            queue_pending(db, collection.id, limit=len(rows))
        found = db.execute(
            select(Image.relative_path, Image.id).where(Image.collection_id == collection.id)
        )
        return {path: image_id for path, image_id in found}


def read_image(sessions: sessionmaker[Session], image_id: int) -> Image:
    """Return a fresh copy of one image row."""
    with sessions.begin() as db:
        image = db.get(Image, image_id, populate_existing=True)
        assert image is not None
        return image


def attempts_of(sessions: sessionmaker[Session], image_id: int) -> list[Attempt]:
    """Return the attempts of an image, oldest first."""
    with sessions.begin() as db:
        query = select(Attempt).where(Attempt.image_id == image_id).order_by(Attempt.number)
        return list(db.scalars(query))


def submit_folder(
    sessions: sessionmaker[Session], broker_url: str, name: str, source: Path, output: Path
) -> Any:
    """Submit a folder as a collection at input size 256, its tasks sent through the broker.

    Returns:
        The submission's summary.
    """
    from scheduler import CollectionSettings, celery_sender, submit
    from storage.registry import open_storage
    from workers.app import create_app

    producer = create_app(broker_url=broker_url)
    try:
        return submit(
            sessions,
            name=name,
            source=source,
            output=output,
            storage=open_storage(source),
            send=celery_sender(producer),
            max_in_flight=10,
            settings=CollectionSettings(input_size=256),
        )
    finally:
        producer.close()


def run_worker(
    broker_url: str,
    database_url: str,
    node: str,
    *,
    colorizer_factory: Callable[[Any], Colorizer] | None = None,
    batch_size: int | None = None,
    **options: Any,
) -> None:
    """Run a real colorize worker: prefork, one process, the tiny model untrained on the CPU.

    Args:
        broker_url: The Redis broker.
        database_url: The catalog.
        node: The worker's node name.
        colorizer_factory: Builds the colorizer instead of the tiny model, or None.
        batch_size: Images colorized together; None for the default.
        **options: Further ``create_app()`` settings (time limits).
    """
    from workers.commandline import worker_argv
    from workers.runtime import WorkerConfig, WorkerRuntime
    from workers.tasks import build_worker_app

    config = WorkerConfig(
        database_url=database_url,
        untrained=True,
        device="cpu",
        precision="fp32",
        size=256,
        node_name=node,
        cpu_threads=1,
        batch_size=batch_size,
    )
    runtime = None
    if colorizer_factory is not None:
        runtime = WorkerRuntime(config, colorizer_factory=colorizer_factory)
    app = build_worker_app(config, broker_url=broker_url, runtime=runtime, **options)
    app.worker_main(argv=worker_argv(node, loglevel="INFO"))


if __name__ == "__main__":
    run_worker(*sys.argv[1:4], batch_size=int(sys.argv[4]) if len(sys.argv) > 4 else None)
