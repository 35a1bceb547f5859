"""What must hold after every fault, and how long the cluster took to get over it.

After a collection has ended, :func:`verify` compares the catalog with what is really in
the bucket (or the output folder):

- every good image is ``done`` exactly once (one attempt ended ``done``) with exactly one
  output, whose SHA-256 is the one the catalog recorded;
- every corrupt image is ``failed`` with a reason (and any image the scenario expects to
  fail, such as the stuck one, failed with its words);
- nothing is left ``pending``, ``queued`` or ``running``;
- the output location holds nothing else: no temporary files, no unfinished multipart
  uploads, no object the catalog did not plan (a complete report thumbnail under
  ``.panchro/thumbs/`` is allowed: a worker may die between recording ``done`` and
  recording its thumbnails);
- the originals' ETags are the ones they had when uploaded.

The recovery time is measured from the catalog's own timestamps: from the end of the
fault to the moment the last *affected* image ended, where affected means running when
the fault began, or tried and not done while it lasted.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from catalog import ImageStatus
from workers.thumbnails import MARKER as THUMBNAIL_MARKER

if TYPE_CHECKING:
    from fault_cluster import FaultCluster, Submitted


@dataclass
class FaultWindow:
    """When a fault lasted, and what was running when it began.

    Attributes:
        fault: Its name.
        start: When it began (epoch seconds).
        end: When it ended (epoch seconds); the scenario may set it.
        running_at_start: Ids of the images running when it began.
    """

    fault: str
    start: float
    end: float = 0.0
    running_at_start: frozenset[int] = frozenset()


@contextmanager
def fault_window(
    cluster: FaultCluster, name: str, fault: str, *, worker: str | None = None
) -> Iterator[FaultWindow]:
    """Time a fault injected in the block; its end is the block's end unless set inside.

    Args:
        cluster: The cluster.
        name: The collection it hits.
        fault: The fault's name.
        worker: The one worker node it hits; None for all of them.

    Yields:
        The window, with ``start`` and the running images filled in.
    """
    running = frozenset(
        row.id for row in cluster.running(name) if worker is None or row.worker == worker
    )
    window = FaultWindow(fault, start=time.time(), running_at_start=running)
    yield window
    if not window.end:
        window.end = time.time()


@dataclass
class Verdict:
    """What a collection looks like after a fault.

    Attributes:
        fault: The fault's name.
        images: Images in the catalog.
        affected: Images the fault hit (see the module's text).
        recovery_s: Seconds from the fault's end to the last affected image's end.
        lost: Good images not done, or done without their output.
        duplicated: Images done more than once.
        half_written: Outputs whose bytes are not the recorded ones, temporary or stray
            objects, unfinished multipart uploads.
        left_open: Images left pending, queued or running.
        originals_changed: Originals whose ETag changed.
        wrong_failures: Images that should have failed and did not, or failed without
            the expected reason.
    """

    fault: str
    images: int = 0
    affected: int = 0
    recovery_s: float = 0.0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    half_written: list[str] = field(default_factory=list)
    left_open: list[str] = field(default_factory=list)
    originals_changed: list[str] = field(default_factory=list)
    wrong_failures: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        """Every broken promise, one line each; empty when all hold."""
        groups = {
            "lost": self.lost,
            "duplicated": self.duplicated,
            "half-written": self.half_written,
            "left open": self.left_open,
            "original changed": self.originals_changed,
            "wrong failure": self.wrong_failures,
        }
        return [f"{what}: {item}" for what, items in groups.items() for item in items]

    @property
    def outcome(self) -> str:
        """``recovered`` when every promise holds, else the kinds that broke."""
        broken = sorted({line.split(":", 1)[0] for line in self.problems()})
        return "recovered" if not broken else "BROKEN: " + ", ".join(broken)

    def summary(self) -> str:
        """One line for the test's output."""
        return (
            f"{self.fault}: {self.images} images, {self.affected} affected, "
            f"{len(self.lost)} lost, {len(self.duplicated)} duplicated, "
            f"{len(self.half_written)} half-written; all affected images ended "
            f"{self.recovery_s:.1f} s after the fault ended; {self.outcome}"
        )


def verify(
    cluster: FaultCluster,
    submitted: Submitted,
    window: FaultWindow,
    *,
    expect_failed: Mapping[str, str] | None = None,
) -> Verdict:
    """Check every promise about a collection that has ended (see the module's text).

    Args:
        cluster: The cluster.
        submitted: The collection.
        window: The fault it went through.
        expect_failed: Good images that must fail instead, with words of their reason.

    Returns:
        The verdict; ``verdict.problems()`` is empty when everything holds.
    """
    expected_failures = dict(expect_failed or {})
    verdict = Verdict(window.fault)
    rows = {row.relative: row for row in cluster.images(submitted.name)}
    attempts = cluster.attempts(submitted.name)
    verdict.images = len(rows)
    done_tries = Counter(a.image_id for a in attempts if a.outcome == "done")
    outputs = _outputs(cluster, submitted)
    planned: set[str] = set()
    for item in submitted.files:
        row = rows.get(item.relative)
        if row is None:
            verdict.lost.append(f"{item.relative} is not in the catalog")
            continue
        if row.status in (ImageStatus.PENDING, ImageStatus.QUEUED, ImageStatus.RUNNING):
            verdict.left_open.append(f"{item.relative} is {row.status.value}")
            continue
        if not item.good or item.relative in expected_failures:
            words = expected_failures.get(item.relative, "")
            if row.status is not ImageStatus.FAILED or not row.last_error:
                verdict.wrong_failures.append(f"{item.relative} is {row.status.value}")
            elif words.lower() not in row.last_error.lower():
                verdict.wrong_failures.append(
                    f"{item.relative} failed with {row.last_error!r}, not {words!r}"
                )
            continue
        planned.add(row.output_uri)
        if row.status is not ImageStatus.DONE:
            verdict.lost.append(f"{item.relative} is {row.status.value}: {row.last_error}")
            continue
        if done_tries[row.id] != 1:
            verdict.duplicated.append(f"{item.relative} has {done_tries[row.id]} done tries")
        data = outputs.get(row.output_uri)
        if data is None:
            verdict.lost.append(f"{item.relative} is done but {row.output_uri} does not exist")
        elif hashlib.sha256(data).hexdigest() != row.output_sha256:
            verdict.half_written.append(f"{row.output_uri} is not the output recorded")
    for uri in sorted(set(outputs) - planned):
        if not _is_whole_thumbnail(uri, outputs[uri]):
            verdict.half_written.append(f"{uri} is no recorded output")
    verdict.half_written += [f"unfinished upload of {key}" for key in _uploads(cluster, submitted)]
    for relative, etag in submitted.etags.items():
        head = cluster.s3.head_object(Bucket=cluster.bucket, Key=submitted.key(relative))
        if head["ETag"] != etag:
            verdict.originals_changed.append(relative)
    verdict.affected, verdict.recovery_s = _recovery(cluster, submitted, window)
    return verdict


def _outputs(cluster: FaultCluster, submitted: Submitted) -> dict[str, bytes]:
    """Every file below the output location, by URI (hidden and temporary ones too)."""
    found: dict[str, bytes] = {}
    if submitted.output.startswith("s3://"):
        prefix = submitted.output.removeprefix(f"s3://{cluster.bucket}/").rstrip("/") + "/"
        pages = cluster.s3.get_paginator("list_objects_v2").paginate(
            Bucket=cluster.bucket, Prefix=prefix
        )
        for page in pages:
            for entry in page.get("Contents", []):
                body = cluster.s3.get_object(Bucket=cluster.bucket, Key=entry["Key"])["Body"]
                found[f"s3://{cluster.bucket}/{entry['Key']}"] = body.read()
        return found
    root = Path(submitted.output)
    for folder, _, names in os.walk(root):
        for file_name in names:
            path = Path(folder) / file_name
            if path.name != ".filler":
                found[str(path)] = path.read_bytes()
    return found


def _is_whole_thumbnail(uri: str, data: bytes) -> bool:
    """Whether a file is a complete report thumbnail (``workers.thumbnails``), not an output."""
    name = uri.rsplit("/.panchro/thumbs/", 1)[-1]
    return (
        name != uri
        and name.endswith((".source.jpg", ".output.jpg"))
        and data.startswith(b"\xff\xd8")
        and data.endswith(b"\xff\xd9")
        and THUMBNAIL_MARKER in data[:4096]
    )


def _uploads(cluster: FaultCluster, submitted: Submitted) -> list[str]:
    """Keys of multipart uploads begun and never completed below the output."""
    if not submitted.output.startswith("s3://"):
        return []
    prefix = submitted.output.removeprefix(f"s3://{cluster.bucket}/")
    answer = cluster.s3.list_multipart_uploads(Bucket=cluster.bucket, Prefix=prefix)
    return [str(upload["Key"]) for upload in answer.get("Uploads", [])]


def _recovery(
    cluster: FaultCluster, submitted: Submitted, window: FaultWindow
) -> tuple[int, float]:
    """Affected images and seconds from the fault's end until the last of them ended."""
    good = {item.relative for item in submitted.files if item.good}
    rows = {row.id: row for row in cluster.images(submitted.name)}
    affected = set(window.running_at_start)
    for attempt in cluster.attempts(submitted.name):
        row = rows.get(attempt.image_id)
        if row is None or row.relative not in good or attempt.outcome == "done":
            continue
        if attempt.started_at.timestamp() <= window.end:
            affected.add(attempt.image_id)
    ends = [
        row.finished_at.timestamp()
        for image_id in affected
        if (row := rows.get(image_id)) is not None and row.finished_at is not None
    ]
    return len(affected), max([0.0, *(end - window.end for end in ends)])
