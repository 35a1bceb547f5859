"""What the job queue costs on top of the model: one worker against a bare loop.

The same N grayscale JPEG scans (512-1024 px a side) are colorized at input size 512 by:

- (a) a bare loop in this process: decode with Pillow, ``colorize()`` with a colorizer
  loaded once (and warmed up as a worker is), encode a JPEG as the worker does (quality
  95, 4:4:4, optimised tables), write the file. Nothing else: the least work that turns
  the scans into colour copies.
- (b) the whole system: ``panchro workers --cpu 1`` (one Celery worker, one prefork pool
  process) is started once, on a fresh PostgreSQL catalog, and waited for until its model
  is loaded and has run its warm-up pass. Each run, ``panchro submit`` registers the folder
  as a new collection and sends the tasks through Redis; the worker claims each image,
  reads it, colorizes it, writes the copy atomically and records the provenance. The time
  runs from the start of ``panchro submit`` to the ``finished_at`` of the last image. The
  worker lives through all runs, as a worker does in production: a fresh process per run
  was 5-15 % slower in its first run here, all images alike, which a virtual machine's
  first touch of memory would explain. panchro's own modules are compiled to bytecode
  first, as installing a package does (see :func:`compile_panchro`).

Both use the same checkpoint, device (CPU), precision and torch thread count: the number
of cores this process may use, which is what ``panchro workers --cpu 1`` gives its only
worker. The weights are a synthetic checkpoint (seeded random weights, written with
``torch.save``) of ``ddcolor_paper_tiny``, or of ``ddcolor_paper`` with ``--model large``:
the colours are meaningless, the work is the real network's. The runs alternate, the bare
loop first and last (a, b, a, b, a, b, a with the default three rounds), and the means
are compared, so that a drift in the speed of a shared machine shows instead of passing
for overhead or for a gain.

The system's time is taken apart with the catalog's timestamps (``queued_at``,
``started_at``, ``finished_at``) and the worker's log line per image (its ``colorize()``
seconds). Because ``colorize()`` runs the same code in both, "(b) with (a)'s model time"
adds what the system spends outside the model to the bare loop's model time: an estimate
of the ratio that does not depend on how busy the machine was while each ran.

Usage::

    python benchmarks/pipeline.py                      # 24 images, tiny model: ~8 minutes
    python benchmarks/pipeline.py --images 8 --model large --rounds 1

``PANCHRO_BENCH_DATABASE_URL`` is a PostgreSQL URL whose role may create databases
(default: the local test server); ``PANCHRO_BENCH_BROKER_URL`` names a Redis database the
benchmark may empty; unset, a private ``redis-server`` is started on a free port.
"""

from __future__ import annotations

import argparse
import compileall
import gc
import importlib.util
import io
import logging
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import redis
from bench_servers import fresh_database, private_redis, wait_for
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from catalog import OPEN_STATUSES, Collection, Image, ImageStatus, make_engine
from workers.app import create_app
from workers.devices import inventory_from, plan_workers

#: PostgreSQL used when PANCHRO_BENCH_DATABASE_URL is unset.
DEFAULT_DATABASE_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
#: panchro's packages, compiled before the runs (see :func:`compile_panchro`).
PANCHRO_PACKAGES = (
    "catalog",
    "ddcolor",
    "migrations",
    "panchro",
    "scheduler",
    "storage",
    "workers",
)
#: Images colorized by each run.
DEFAULT_IMAGES = 24
#: Runs of the system, each between two runs of the bare loop: a shared machine's speed
#: drifts by several per cent from one minute to the next, so one run of each is not enough.
DEFAULT_ROUNDS = 3
#: Square model input size, in pixels (the default of ``panchro submit``).
INPUT_SIZE = 512
#: Shortest and longest side of the scans, in pixels.
SIDE_RANGE = (512, 1024)
#: JPEG quality of the scans (IJG scale).
SCAN_QUALITY = 90
#: JPEG quality of the colour copies (IJG scale), as ``storage.codecs.encode.QUALITY``.
OUTPUT_QUALITY = 95
#: ``--model`` choices and the registry names they build.
MODEL_NAMES = {"tiny": "ddcolor_paper_tiny", "large": "ddcolor_paper"}
#: Seed of the scans and of the synthetic weights.
SEED = 2024
#: Submission sizes the report projects the ratio to, from the measured means.
PROJECTED_IMAGES = (24, 100, 1_000)
#: Seconds to wait for a private server, or for the worker to load its model.
START_TIMEOUT_S = 300.0
#: Seconds the system may take for the whole collection; a guard against hanging.
RUN_TIMEOUT_S = 3_600.0
#: Seconds between two looks at the catalog or the worker.
POLL_S = 0.25
#: Seconds between two looks at the catalog while a run goes on. Its end is read from the
#: images' ``finished_at``, not from when a look sees it, so a slow look costs no precision;
#: looking every 0.25 s took 0.7 s of CPU per run, taken from the worker it measures.
RUN_POLL_S = 2.0
#: The worker's line per image; ``model`` is the whole ``colorize()`` call in seconds.
DONE_LINE = re.compile(
    r"image (?P<id>\d+): done(?: in [\d.]+ s)?: .*, model [\d.]+ of (?P<model>[\d.]+) s,"
)
#: The worker's line once its pool process has loaded the model.
READY_LINE = re.compile(r"runtime \S+: .* ready in (?P<seconds>[\d.]+) s")
#: The worker's line once its pool process has run the network once (or failed to).
WARM_LINE = re.compile(r"runtime \S+: warm-up pass (?P<seconds>[\d.]+) s|warm-up pass failed")


@dataclass(frozen=True)
class BareRun:
    """Seconds of the bare loop: the model load, then each step of each image."""

    load_s: float
    warm_up_s: float
    decode_s: list[float]
    model_s: list[float]
    encode_s: list[float]

    @property
    def total_s(self) -> float:
        """The whole loop, model load excluded."""
        return sum(self.decode_s) + sum(self.model_s) + sum(self.encode_s)


@dataclass(frozen=True)
class SystemRun:
    """The system's run: start-up, the submission, and each image's times.

    Attributes:
        ready_s: From starting ``panchro workers`` until the model was loaded and had
            run its warm-up pass.
        model_load_s: The model load inside that, from the worker's log.
        warm_up_s: The warm-up pass inside that, from the worker's log.
        submitted_at: When ``panchro submit`` was started.
        submit_s: How long the ``panchro submit`` command ran.
        images: ``(queued_at, started_at, finished_at, colorize seconds)`` of every image,
            in the order the worker claimed them.
    """

    ready_s: float
    model_load_s: float
    warm_up_s: float
    submitted_at: datetime
    submit_s: float
    images: list[tuple[datetime, datetime, datetime, float]]

    def since_submit(self, moment: datetime) -> float:
        """Seconds from the start of ``panchro submit`` to ``moment``."""
        return (moment - self.submitted_at).total_seconds()

    @property
    def span_s(self) -> float:
        """From the start of ``panchro submit`` to the last recorded result."""
        return self.since_submit(self.images[-1][2])

    @property
    def model_s(self) -> float:
        """The ``colorize()`` calls, summed."""
        return sum(image[3] for image in self.images)

    @property
    def tasks_s(self) -> float:
        """From each claim to its recorded result, summed."""
        return sum((done - claimed).total_seconds() for _, claimed, done, _ in self.images)


def write_scans(folder: Path, count: int) -> list[Path]:
    """Write ``count`` grayscale JPEG scans of 512-1024 px a side into a new folder.

    Args:
        folder: Where to write them.
        count: How many.

    Returns:
        Their paths, in name order.
    """
    rng = np.random.default_rng(SEED)
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        width, height = (int(side) for side in rng.integers(*SIDE_RANGE, endpoint=True, size=2))
        y, x = np.mgrid[0:height, 0:width].astype(np.float32)
        picture = 0.5 + 0.3 * np.sin(x / (9.0 + index)) * np.cos(y / (13.0 + index))
        picture += rng.normal(0.0, 0.04, size=(height, width)).astype(np.float32)
        path = folder / f"scan{index:03d}.jpg"
        pixels = (np.clip(picture, 0.0, 1.0) * 255.0).astype(np.uint8)
        PILImage.fromarray(pixels, mode="L").save(path, quality=SCAN_QUALITY)
        paths.append(path)
    return paths


def write_checkpoint(folder: Path, model_name: str) -> Path:
    """Write a checkpoint of ``model_name`` with seeded random weights (a bare state dict).

    Args:
        folder: Where to write it; the file is named after the model, as official ones are.
        model_name: A registry name (``ddcolor_paper_tiny``, ``ddcolor_paper``).

    Returns:
        The file.
    """
    import torch

    from ddcolor import build_ddcolor

    path = folder / f"{model_name}.pth"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        torch.save(build_ddcolor(model_name).state_dict(), path)
    return path


def worker_threads() -> int:
    """The torch threads ``panchro workers --cpu 1`` gives its worker on this machine.

    Returns:
        The count, from the launcher's own planning function.
    """
    slot = plan_workers(inventory_from(0, torch_version="cpu"), cpu_workers=1)[0]
    assert slot.threads is not None
    return slot.threads


def run_bare(scans: list[Path], output: Path, weights: Path, precision: str) -> BareRun:
    """Colorize the scans in a plain loop: the least work there is.

    Args:
        scans: The scans.
        output: Folder for the copies.
        weights: The checkpoint.
        precision: ``auto``, ``fp32`` or ``bf16``.

    Returns:
        The timings.
    """
    from ddcolor import load_colorizer

    output.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    colorizer = load_colorizer(weights, device="cpu", precision=precision, size=INPUT_SIZE)
    loaded = time.perf_counter()
    colorizer.warm_up()  # as a worker does before its first task
    run = BareRun(loaded - began, time.perf_counter() - loaded, [], [], [])
    for path in scans:
        t0 = time.perf_counter()
        with PILImage.open(io.BytesIO(path.read_bytes())) as scan:
            gray = np.asarray(scan.convert("L"))
        t1 = time.perf_counter()
        rgb = colorizer.colorize(gray).image
        t2 = time.perf_counter()
        buffer = io.BytesIO()
        PILImage.fromarray(rgb).save(
            buffer, format="JPEG", quality=OUTPUT_QUALITY, subsampling=0, optimize=True
        )
        (output / path.name).write_bytes(buffer.getvalue())
        t3 = time.perf_counter()
        run.decode_s.append(t1 - t0)
        run.model_s.append(t2 - t1)
        run.encode_s.append(t3 - t2)
    del colorizer
    gc.collect()
    return run


def _panchro(*args: str) -> list[str]:
    return [sys.executable, "-m", "panchro.cli", *args]


@contextmanager
def running_worker(env: Mapping[str, str], weights: Path, log: Path) -> Iterator[float]:
    """Run ``panchro workers --cpu 1`` until the block ends, then stop it warmly.

    Celery reports the worker ready before its pool process has loaded the model, so the
    wait is for both: a reply to a ping and the warm-up pass's line in the log.

    Args:
        env: Its environment (the ``PANCHRO_*`` settings).
        weights: The checkpoint.
        log: File for its output.

    Yields:
        Seconds from its start until it answered and had its model loaded.
    """
    node = f"cpu0@{socket.gethostname()}"
    app = create_app(broker_url=env["PANCHRO_BROKER_URL"])
    began = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            _panchro("workers", "--cpu", "1", "--weights", str(weights)),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            if proc.poll() is not None:
                raise SystemExit(f"panchro workers exited early:\n{log.read_text()}")
            if not WARM_LINE.search(log.read_text(errors="replace")):
                return False
            return bool(app.control.ping(destination=[node], timeout=POLL_S))

        wait_for(ready, f"{node} to load its model", START_TIMEOUT_S, POLL_S)
        yield time.perf_counter() - began
    finally:
        app.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def compile_panchro() -> None:
    """Write the bytecode of panchro's own packages, as installing a package does.

    An editable install compiles nothing, and with PYTHONDONTWRITEBYTECODE set (as some
    shells and containers do) each `panchro submit` compiled ~75 of panchro's modules from
    source again: ~0.1 s of its start that an installed panchro never pays.
    """
    for package in PANCHRO_PACKAGES:
        spec = importlib.util.find_spec(package)
        assert spec is not None and spec.origin is not None, package
        compileall.compile_dir(Path(spec.origin).parent, quiet=1)


def system_env(database_url: str, broker_url: str, precision: str) -> dict[str, str]:
    """The environment of the system's commands: this one's, with the run's settings.

    Args:
        database_url: The catalog.
        broker_url: The Redis database.
        precision: ``auto``, ``fp32`` or ``bf16``.

    Returns:
        The variables.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("PANCHRO_")}
    env.update(
        PANCHRO_DATABASE_URL=database_url,
        PANCHRO_BROKER_URL=broker_url,
        PANCHRO_PRECISION=precision,
    )
    return env


def run_system(
    collection: str,
    scans: Path,
    output: Path,
    weights: Path,
    env: Mapping[str, str],
    log: Path,
    ready_s: float,
) -> SystemRun:
    """Submit the scans as a new collection to the running worker and wait for them.

    Args:
        collection: Its name, new in the catalog.
        scans: The folder of the scans.
        output: Folder for the copies.
        weights: The checkpoint.
        env: The system's environment (see :func:`system_env`).
        log: The worker's log.
        ready_s: How long the worker took to start.

    Returns:
        The timings.
    """
    engine = make_engine(env["PANCHRO_DATABASE_URL"])
    submit = ["submit", str(scans), "--collection", collection, "--output", str(output)]
    submit += ["--size", str(INPUT_SIZE), "--weights", str(weights)]
    in_collection = (Image.collection_id == Collection.id) & (Collection.name == collection)
    try:
        submitted_at = datetime.now(UTC)
        began = time.perf_counter()
        done = subprocess.run(_panchro(*submit), env=dict(env), capture_output=True, check=False)
        submit_s = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"panchro submit failed:\n{done.stderr.decode()}")

        def finished() -> bool:
            with Session(engine) as db:
                query = select(Image.id).where(in_collection, Image.status.in_(OPEN_STATUSES))
                return db.scalars(query.limit(1)).first() is None

        wait_for(finished, f"collection {collection} to finish", RUN_TIMEOUT_S, RUN_POLL_S)
        with Session(engine) as db:
            rows = list(db.scalars(select(Image).where(in_collection).order_by(Image.started_at)))
    finally:
        engine.dispose()
    text_log = log.read_text(errors="replace")
    if any(row.status != ImageStatus.DONE for row in rows):
        raise SystemExit(f"some images were not colorized:\n{text_log}")
    model_s = {int(line["id"]): float(line["model"]) for line in DONE_LINE.finditer(text_log)}
    images = []
    for row in rows:
        assert row.queued_at and row.started_at and row.finished_at
        images.append((row.queued_at, row.started_at, row.finished_at, model_s[row.id]))
    loaded = READY_LINE.search(text_log)
    warmed = WARM_LINE.search(text_log)
    assert loaded is not None
    assert warmed is not None and warmed["seconds"], "the worker's warm-up pass failed"
    return SystemRun(
        ready_s, float(loaded["seconds"]), float(warmed["seconds"]), submitted_at, submit_s, images
    )


def machine() -> str:
    """Describe the machine: cores, processor, memory.

    Returns:
        One line.
    """
    info = Path("/proc/cpuinfo").read_text(encoding="utf-8")
    model = next(
        (line.split(":", 1)[1].strip() for line in info.splitlines() if "model name" in line),
        platform.processor() or "unknown",
    )
    memory = Path("/proc/meminfo").read_text(encoding="utf-8").split("MemTotal:")[1].split()[0]
    return (
        f"{os.cpu_count()} CPU cores ({model}), {int(memory) / 2**20:.0f} GiB RAM, no GPU, "
        f"Python {platform.python_version()}"
    )


def _load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def report(bare: list[BareRun], systems: list[SystemRun]) -> str:
    """Format the result tables (Markdown).

    Args:
        bare: The bare loop's runs, in the order they ran.
        systems: The system's runs, each between two bare ones.

    Returns:
        The text.
    """
    count = len(systems[0].images)
    reference = statistics.fmean(run.total_s for run in bare)
    model_a = statistics.fmean(sum(run.model_s) for run in bare)
    span_b = statistics.fmean(system.span_s for system in systems)
    own_b = statistics.fmean(system.span_s - system.model_s for system in systems)
    rows: list[tuple[str, float, float]] = []
    for n in range(max(len(bare), len(systems))):
        if n < len(bare):
            rows.append((f"(a) bare loop, run {n + 1}", bare[n].total_s, sum(bare[n].model_s)))
        if n < len(systems):
            rows.append((f"(b) panchro, run {n + 1}", systems[n].span_s, systems[n].model_s))
    # From the start of `panchro submit` to the first claim: paid once per submission.
    to_claim = statistics.fmean(system.since_submit(system.images[0][1]) for system in systems)
    rows += [
        ("(a) mean: the reference", reference, model_a),
        ("(b) mean: submit to last done", span_b, span_b - own_b),
        ("(b) mean with (a)'s `colorize()` time", model_a + own_b, model_a),
        (
            "(b) as above, from the first claim: the images' own",
            model_a + own_b - to_claim,
            model_a,
        ),
    ]
    lines = [
        "| run | images | seconds | `colorize()` s | images/s | vs (a) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, seconds, model_s in rows:
        lines.append(
            f"| {label} | {count} | {seconds:.1f} | {model_s:.1f} | {count / seconds:.3f} | "
            f"{seconds / reference:.3f} |"
        )

    def mean(part: Callable[[SystemRun], float]) -> float:
        return statistics.fmean(part(system) for system in systems)

    def first_queued(system: SystemRun) -> datetime:
        return min(image[0] for image in system.images)

    def gaps(system: SystemRun) -> float:
        return sum(
            (after[1] - before[2]).total_seconds()
            for before, after in zip(system.images, system.images[1:], strict=False)
        )

    breakdown = [
        ("`colorize()` calls", model_a, mean(lambda run: run.model_s)),
        ("decode, encode, write (a)", reference - model_a, None),
        (
            "submit start to first image queued",
            None,
            mean(lambda run: run.since_submit(first_queued(run))),
        ),
        (
            "first image queued to first claim",
            None,
            mean(lambda run: (run.images[0][1] - first_queued(run)).total_seconds()),
        ),
        ("in tasks, outside `colorize()`", None, mean(lambda run: run.tasks_s - run.model_s)),
        ("between tasks: result, ack, next message, claim", None, mean(gaps)),
        ("total", reference, span_b),
    ]
    lines += ["", "| where the time goes, means | (a) s | (b) s |", "|---|---:|---:|"]
    for label, bare_s, system_s in breakdown:
        cells = ["-" if value is None else f"{value:.2f}" for value in (bare_s, system_s)]
        lines.append(f"| {label} | {cells[0]} | {cells[1]} |")
    # On the estimate (the bare loop's model time for both): the raw model times of two
    # processes differ by up to 10 % from run to run on this machine, either way.
    per_image_a, per_image_b = reference / count, (model_a + own_b - to_claim) / count
    projected = ", ".join(
        f"{n:,} images {(to_claim + n * per_image_b) / (n * per_image_a):.3f}"
        for n in PROJECTED_IMAGES
    )
    lines += [
        "",
        f"Start of `panchro submit` to the first claim: {to_claim:.2f} s, once per submission. "
        f"With these means and (a)'s `colorize()` time, (b) / (a) for a submission of "
        f"{projected}.",
        f"`panchro submit` ran {mean(lambda run: run.submit_s):.1f} s in all (it exits after "
        "dispatching).",
        f"Not in the tables: from starting `panchro workers` to a loaded model "
        f"{mean(lambda run: run.ready_s):.1f} s (of which loading the checkpoint "
        f"{mean(lambda run: run.model_load_s):.1f} s and the warm-up pass "
        f"{mean(lambda run: run.warm_up_s):.1f} s); the bare loop's load "
        f"{statistics.fmean(run.load_s for run in bare):.1f} s and warm-up pass "
        f"{statistics.fmean(run.warm_up_s for run in bare):.1f} s.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the result tables (Markdown).

    Args:
        argv: Command-line arguments; None reads ``sys.argv``.

    Returns:
        The exit status.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--images", type=int, default=DEFAULT_IMAGES, help="images per run")
    parser.add_argument("--model", choices=sorted(MODEL_NAMES), default="tiny", help="network")
    parser.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto", help="of both runs"
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=DEFAULT_ROUNDS,
        help="runs of the system, each followed by a run of the bare loop (default %(default)s)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the working folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import torch

    from ddcolor import resolve_precision

    threads = worker_threads()
    torch.set_num_threads(threads)
    admin_url = os.environ.get("PANCHRO_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    print(f"Machine: {machine()}; load average {_load()}", flush=True)
    with ExitStack() as stack:
        if args.keep:
            work = Path(tempfile.mkdtemp(prefix="panchro-bench-"))
            print(f"working folder: {work}", flush=True)
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="panchro-bench-")))
        broker_url = os.environ.get("PANCHRO_BENCH_BROKER_URL") or stack.enter_context(
            private_redis(START_TIMEOUT_S)
        )
        scans = write_scans(work / "scans", args.images)
        weights = write_checkpoint(work, MODEL_NAMES[args.model])
        print(
            f"{args.images} JPEG scans of {SIDE_RANGE[0]}-{SIDE_RANGE[1]} px; "
            f"{MODEL_NAMES[args.model]}, synthetic checkpoint (random weights); input "
            f"{INPUT_SIZE} px; {resolve_precision(args.precision, 'cpu')}; {threads} torch "
            "threads in both runs",
            flush=True,
        )
        compile_panchro()
        database_url = stack.enter_context(fresh_database(admin_url))
        redis.Redis.from_url(broker_url).flushdb()
        env = system_env(database_url, broker_url, args.precision)
        log = work / "workers.log"
        ready_s = stack.enter_context(running_worker(env, weights, log))
        print(f"worker ready in {ready_s:.1f} s; load average {_load()}", flush=True)
        bare = [run_bare(scans, work / "bare", weights, args.precision)]
        print(f"(a) run 1 done; load average {_load()}", flush=True)
        systems = []
        for round_ in range(1, args.rounds + 1):
            output = work / f"colour-{round_}"
            systems.append(
                run_system(f"bench-{round_}", work / "scans", output, weights, env, log, ready_s)
            )
            print(f"(b) run {round_} done; load average {_load()}", flush=True)
            bare.append(run_bare(scans, work / "bare", weights, args.precision))
            print(f"(a) run {round_ + 1} done; load average {_load()}", flush=True)
    print()
    print(report(bare, systems))
    return 0


if __name__ == "__main__":
    sys.exit(main())
