"""``panchro export --bagit``: a valid BagIt bag of the outputs, or nothing at all."""

from __future__ import annotations

from pathlib import Path

import bagit
import pytest
from click.testing import CliRunner
from exports_rows import CHECKPOINT, NAME, Built
from sqlalchemy.orm import Session, sessionmaker

from exports.bag import export_bag
from exports.errors import ContentMismatch
from exports.objects import Agent, Stores
from panchro.cli import cli
from storage import StorageOptions

#: Payload of the bag of exports_rows' collection: the done image's output, copy, sidecar.
PAYLOAD = {
    "data/a.png": "a.png",
    "data/access/a.jpg": "access/a.jpg",
    "data/a.png.json": "a.png.json",
}


def _assert_payload(bag_dir: Path, built: Built) -> None:
    found = sorted(
        str(p.relative_to(bag_dir)) for p in (bag_dir / "data").rglob("*") if p.is_file()
    )
    assert found == sorted(PAYLOAD)
    for path, relative in PAYLOAD.items():
        assert (bag_dir / path).read_bytes() == built.files[f"{built.output}/{relative}"]


def test_bag_validates_with_both_manifests_and_fails_once_a_payload_file_is_tampered(
    sqlite_url: str, local_built: Built, tmp_path: Path
) -> None:
    bag_dir = tmp_path / "bags" / NAME

    result = CliRunner().invoke(
        cli, ["--database-url", sqlite_url, "export", NAME, "--bagit", str(bag_dir), "--jobs", "1"]
    )

    assert result.exit_code == 0, result.output
    bag = bagit.Bag(str(bag_dir))
    bag.validate()
    assert bag.version_info == (1, 0)
    assert sorted(bag.algorithms) == ["sha256", "sha512"]
    _assert_payload(bag_dir, local_built)
    assert bag.info["Panchro-Checkpoint-SHA256"] == CHECKPOINT
    assert bag.info["Panchro-Images-Done"] == "1" and bag.info["Panchro-Untrained"] == "yes"
    assert bag.info["Panchro-Source"] == local_built.source
    assert "metadata/premis.xml" in bag.tagfile_entries()
    assert b"premis:premis" in (bag_dir / "metadata" / "premis.xml").read_bytes()
    (bag_dir / "data" / "a.png").write_bytes(b"tampered")
    with pytest.raises(bagit.BagValidationError):
        bagit.Bag(str(bag_dir)).validate()


def test_bag_refuses_a_folder_that_is_not_empty_and_fills_an_empty_one(
    sqlite_url: str, local_built: Built, tmp_path: Path
) -> None:
    busy, empty = tmp_path / "busy", tmp_path / "empty"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    empty.mkdir()

    refused = CliRunner().invoke(
        cli, ["--database-url", sqlite_url, "export", NAME, "--bagit", str(busy)]
    )
    made = CliRunner().invoke(
        cli, ["--database-url", sqlite_url, "export", NAME, "--bagit", str(empty), "-j", "1"]
    )

    assert refused.exit_code == 1 and "not empty" in refused.stderr, refused.output
    assert [p.name for p in busy.iterdir()] == ["keep.txt"]
    assert made.exit_code == 0, made.output
    bagit.Bag(str(empty)).validate()
    partial = [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    assert partial == [], "no partial bag is left beside them"


def test_no_bag_is_made_when_an_output_differs_from_the_catalog(
    sqlite_sessions: sessionmaker[Session], local_built: Built, tmp_path: Path
) -> None:
    Path(f"{local_built.output}/access/a.jpg").write_bytes(b"edited by hand")
    target = tmp_path / "bag"

    with pytest.raises(ContentMismatch, match="access/a.jpg changed"):
        export_bag(sqlite_sessions, NAME, Agent("1", "h"), target, Stores(), jobs=1)

    assert not target.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.s3
def test_bag_of_outputs_on_s3_downloads_them(
    sqlite_sessions: sessionmaker[Session],
    s3_built: Built,
    s3_options: StorageOptions,
    tmp_path: Path,
) -> None:
    target = tmp_path / "bag"

    made = export_bag(sqlite_sessions, NAME, Agent("1", "h"), target, Stores(s3_options), jobs=2)

    bagit.Bag(str(target)).validate()
    _assert_payload(target, s3_built)
    assert (made.files, made.outputs) == (3, 1)
