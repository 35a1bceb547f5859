"""Time the exports of a 10,000-image collection: PREMIS, BagIt, verify and the HTML report.

Builds a collection as workers leave it, in a temporary folder: an SQLite catalog (rows
written in bulk) and small real files (sources, outputs, access copies, thumbnails), so
that ``verify`` and ``export --bagit`` have bytes to read and hash. Then runs each command
as its own process, as a user would, and prints its wall time and peak memory (the
process's maximum resident set size). The HTML report is ``exports.report.write_report``,
run only where that module exists ("n/a" otherwise).

Usage::

    python benchmarks/report.py                     # 10,000 images, --jobs 4
    python benchmarks/report.py --images 2000 --jobs 2 --keep /tmp/bench
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: Name of the collection built.
NAME = "bench"
#: Bytes of each source, output, access copy and thumbnail file.
SIZES = {"source": 3000, "output": 4000, "copy": 1200, "thumb": 300}
#: Share of images in each final status (the rest are done).
SHARES = {"failed": 0.04, "skipped": 0.03, "pending": 0.02}
#: Share of done images that needed an out-of-memory retry first.
OOM_SHARE = 0.1
#: Share of done images that have an access copy (a ``derivatives`` row).
COPY_SHARE = 0.5
#: Exit status of the report child when ``exports.report`` is not there.
NO_REPORT = 3


def _write(path: Path, size: int, rng: random.Random) -> tuple[str, int]:
    data = rng.randbytes(size)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest(), size


def _status(index: int, count: int) -> str:
    edge = 0.0
    for status, share in SHARES.items():
        edge += share
        if index < edge * count:
            return status
    return "done"


def build(root: Path, count: int) -> tuple[str, dict[str, int]]:
    """Write ``count`` images' files under ``root`` and their rows; return the URL and counts."""
    from sqlalchemy import insert

    from catalog import (
        Attempt,
        Derivative,
        Image,
        create_or_get_collection,
        make_engine,
        make_sessionmaker,
        transaction,
    )
    from migrations.runner import upgrade

    url = f"sqlite:///{root / 'catalog.sqlite3'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_sessionmaker(engine)
    source, output = root / "scans", root / "colour"
    rng = random.Random(1920)
    now = datetime.now(UTC) - timedelta(hours=1)
    images, tries, copies = [], [], []
    counts = {"images": count, "files": 0}
    with transaction(sessions) as db:
        collection, _ = create_or_get_collection(
            db,
            NAME,
            str(source),
            str(output),
            input_size=512,
            model_name="ddcolor_modelscope",
            checkpoint_sha256="ab" * 32,
            precision="fp16",
            upsample="guided",
        )
        collection_id = collection.id
    order = list(range(count))
    rng.shuffle(order)
    for number, index in enumerate(order, start=1):
        status = _status(index, count)
        counts[status] = counts.get(status, 0) + 1
        name = f"box{index // 500:03d}/p{index:06d}.tif"
        src_sha, src_size = _write(source / name, SIZES["source"], rng)
        row = {
            "id": number,
            "collection_id": collection_id,
            "source_uri": str(source / name),
            "relative_path": name,
            "output_uri": str(output / name),
            "source_size": src_size,
            "source_checksum": f"1+{src_size}",
            "source_checksum_kind": "mtime-size",
            "status": status,
            "attempts": 0,
            "failure_code": None,
            "last_error": None,
            "source_sha256": None if status in ("skipped", "pending") else src_sha,
        }
        counts["files"] += 1
        started = now + timedelta(seconds=number)
        if status == "skipped":
            row.update(last_error="not an image: text", failure_code="skip.not-image")
        if status == "failed":
            row.update(
                attempts=1, last_error=f"{name} is truncated", failure_code="decode.truncated"
            )
            tries.append(_try(number, 1, "failed", 512, started))
        if status == "done":
            out_sha, out_size = _write(output / name, SIZES["output"], rng)
            thumbs = output / ".panchro" / "thumbs" / name
            _write(thumbs.with_suffix(".src.jpg"), SIZES["thumb"], rng)
            _write(thumbs.with_suffix(".out.jpg"), SIZES["thumb"], rng)
            oom = rng.random() < OOM_SHARE
            if oom:
                tries.append(_try(number, 1, "oom_retry", 1024, started))
            tries.append(_try(number, 1 + oom, "done", 768 if oom else 512, started, out_sha))
            row.update(
                attempts=1 + oom,
                output_sha256=out_sha,
                output_size=out_size,
                input_size=768 if oom else 512,
                precision="fp16",
                upsample="guided",
                device="cuda:0",
                worker_host="cuda0@gpu1",
                model_name="ddcolor_modelscope",
                checkpoint_sha256="ab" * 32,
                started_at=started,
                finished_at=started + timedelta(seconds=2),
                duration_s=2.0,
                source_thumb_uri=str(thumbs.with_suffix(".src.jpg")),
                output_thumb_uri=str(thumbs.with_suffix(".out.jpg")),
            )
            counts["files"] += 1
            if rng.random() < COPY_SHARE:
                copy = output / "access" / name.replace(".tif", ".jpg")
                copy_sha, copy_size = _write(copy, SIZES["copy"], rng)
                copies.append(
                    {
                        "image_id": number,
                        "kind": "jpeg",
                        "long_edge": 3000,
                        "uri": str(copy),
                        "sha256": copy_sha,
                        "size": copy_size,
                        "width": 3000,
                        "height": 2000,
                    }
                )
                counts["files"] += 1
        images.append(row)
    with transaction(sessions) as db:
        db.execute(insert(Image), images)
        db.execute(insert(Attempt), tries)
        if copies:
            db.execute(insert(Derivative), copies)
    engine.dispose()
    return url, counts


def _try(
    image_id: int, number: int, outcome: str, size: int, at: datetime, sha: str | None = None
) -> dict[str, object]:
    return {
        "image_id": image_id,
        "number": number,
        "worker": "cuda0@gpu1",
        "device": "cuda:0",
        "input_size": size,
        "precision": "fp16",
        "outcome": outcome,
        "output_sha256": sha,
        "error": "truncated file" if outcome == "failed" else None,
        "started_at": at,
        "finished_at": at + timedelta(seconds=1),
    }


def _run(command: list[str]) -> tuple[float, float, int]:
    """Run one child; return its wall seconds, peak RSS in MiB and exit status."""
    began = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - began
    assert child.stderr is not None
    errors = child.stderr.read().decode(errors="replace").strip()
    child.stderr.close()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, NO_REPORT) and errors:
        print(errors.splitlines()[-1], file=sys.stderr)
    return seconds, usage.ru_maxrss / 1024, code


def _report_child(url: str, path: str) -> int:
    """Write the HTML report, if ``exports.report`` exists; NO_REPORT otherwise."""
    try:
        from exports.report import write_report  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return NO_REPORT
    from catalog import make_sessionmaker

    write_report(make_sessionmaker(url), NAME, path)
    return 0


def _size(path: Path) -> str:
    total = (
        path.stat().st_size
        if path.is_file()
        else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    )
    return f"{total / 1e6:.1f} MB"


def main() -> None:
    """Build the collection, time each command, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000, help="Images in the collection.")
    parser.add_argument("--jobs", type=int, default=4, help="--jobs of export and verify.")
    parser.add_argument("--keep", type=Path, help="Build here and keep it (default: a temp dir).")
    parser.add_argument("--child-report", nargs=2, metavar=("URL", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_report:
        sys.exit(_report_child(*args.child_report))
    with tempfile.TemporaryDirectory(prefix="panchro-bench-") as temporary:
        root = args.keep or Path(temporary)
        root.mkdir(parents=True, exist_ok=True)
        began = time.perf_counter()
        url, counts = build(root, args.images)
        built_s = time.perf_counter() - began
        panchro = [str(Path(sys.executable).parent / "panchro"), "--database-url", url]
        jobs = ["--jobs", str(args.jobs)]
        steps = [
            (
                "export --premis",
                [*panchro, "export", NAME, "--premis", str(root / "premis.xml")],
                root / "premis.xml",
            ),
            (
                "export --bagit",
                [*panchro, "export", NAME, "--bagit", str(root / "bag"), *jobs],
                root / "bag",
            ),
            ("verify", [*panchro, "verify", NAME, *jobs], None),
            (
                "HTML report",
                [sys.executable, __file__, "--child-report", url, str(root / "report.html")],
                root / "report.html",
            ),
        ]
        statuses = ", ".join(f"{counts.get(s, 0):,} {s}" for s in ("done", *SHARES))
        print(
            f"{counts['images']:,} images ({statuses}), {counts['files']:,} files of "
            f"{SIZES['source'] / 1000:.0f}-{SIZES['output'] / 1000:.0f} KB, SQLite catalog; "
            f"{os.cpu_count()} CPUs, --jobs {args.jobs}; built in {built_s:.1f} s\n"
        )
        print(f"| {'step':<16} | {'seconds':>8} | {'peak RSS MiB':>12} | {'written':>10} |")
        print(f"|{'-' * 18}|{'-' * 9}:|{'-' * 13}:|{'-' * 11}:|")
        for label, command, made in steps:
            seconds, rss, code = _run(command)
            if code == NO_REPORT:
                print(f"| {label:<16} | {'n/a':>8} | {'n/a':>12} | {'n/a':>10} |")
                continue
            verdict = "" if code == 0 else f" (exit {code})"
            written = _size(made) if made is not None and made.exists() else "events"
            print(f"| {label:<16} | {seconds:>8.1f} | {rss:>12.0f} | {written:>10} |{verdict}")


if __name__ == "__main__":
    main()
