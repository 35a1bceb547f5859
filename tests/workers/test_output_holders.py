"""Which collections hold an output location: the same answer as ``contains()``, cheaply.

A worker asks before every write which collections' sources hold the output (their
originals are never written). It used to parse and resolve every collection's source,
links followed, for every image: 80 ms per image in a catalog of 1,000 collections. Each
stored location is now resolved at most once every ``RESOLVED_TTL_S`` seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import add_collection, read_image, write_gray_png
from workers_helpers import process_locally as _process

from catalog import Claim
from storage.uri import contains, parse_uri
from workers import outputs
from workers.outputs import RESOLVED_TTL_S, collections_holding, plan_output
from workers.process import ProcessStatus

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _nothing_resolved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outputs, "_resolved", {})


def test_the_answer_is_contains_for_links_nesting_and_s3(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "box 1").mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    locations = [
        (1, str(tmp_path / "link")),  # holds real/... through the link
        (2, str(real / "box 1")),
        (3, str(real / "box")),  # a prefix of "box 1" as text, not as a folder
        (4, str(tmp_path / "elsewhere")),
        (5, "s3://bucket/scans"),
        (6, "s3://bucket/scans2"),
        (7, "s3://other/scans"),
        (8, "s3://bucket"),
    ]
    targets = [
        parse_uri(real / "box 1" / "p.tif"),
        parse_uri(tmp_path / "link" / "box 1"),
        parse_uri(real / "box"),
        parse_uri("s3://bucket/scans/p.tif"),
        parse_uri("s3://bucket/scans2"),
    ]

    for target in targets:
        expected = [i for i, text in locations if contains(parse_uri(text), target)]
        assert collections_holding(locations, target) == expected, target
    assert collections_holding(locations, targets[0]) == [1, 2]
    assert collections_holding(locations, targets[3]) == [5, 8]


def test_a_location_is_resolved_once_per_ttl_and_a_retargeted_link_is_seen_after_it(
    tmp_path: Path,
) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    link = tmp_path / "scans"
    link.symlink_to(first)
    locations = [(1, str(link))]

    assert collections_holding(locations, parse_uri(first / "p.tif"), now=100.0) == [1]
    link.unlink()
    link.symlink_to(second)
    # Within the time, the resolution made at 100 s stands ...
    assert collections_holding(locations, parse_uri(first / "p.tif"), now=129.0) == [1]
    # ... and after it, the link is followed again.
    later = 100.0 + RESOLVED_TTL_S
    assert collections_holding(locations, parse_uri(first / "p.tif"), now=later) == []
    assert collections_holding(locations, parse_uri(second / "p.tif"), now=later) == [1]


def test_a_claim_in_a_catalog_of_many_collections_resolves_only_its_output(
    sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(40):
        folder = tmp_path / "archive" / f"box {number}"
        add_collection(sessions, folder, tmp_path / "out" / str(number), [], name=f"box {number}")
    output = tmp_path / "colour"
    claim = Claim(
        image_id=1,
        attempt_id=1,
        attempt_number=1,
        collection_id=1,
        source_uri=str(tmp_path / "scans" / "a.png"),
        output_uri=str(output / "a.png"),
        relative_path="a.png",
    )
    resolved: list[str] = []
    realpath = os.path.realpath

    def counted(path: str) -> str:
        resolved.append(path)
        return realpath(path)

    monkeypatch.setattr(os.path, "realpath", counted)
    for _ in range(2):
        with sessions.begin() as db:
            plan = plan_output(db, claim, str(output))
        assert plan.sources_at == ()
    first = len(resolved)

    with sessions.begin() as db:
        plan_output(db, claim, str(output))

    # Every resolution made twice per collection per image before.
    assert first <= 40 + 2 * 2
    assert len(resolved) - first <= 2


def test_another_collections_original_is_still_refused_when_its_source_was_resolved_before(
    sessions: sessionmaker[Session], source: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    write_gray_png(other / "p.png")
    write_gray_png(other / "q.png")
    theirs = add_collection(
        sessions, other, tmp_path / "other-colour", ["p.png", "q.png"], name="other"
    )
    assert _process(sessions, theirs["q.png"]).status is ProcessStatus.DONE  # resolved now
    write_gray_png(source / "p.png")
    mine = add_collection(sessions, source, tmp_path, ["p.png"], outputs={"p.png": other / "p.png"})

    outcome = _process(sessions, mine["p.png"])

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, mine["p.png"])
    assert row.last_error is not None and "is the original" in row.last_error
