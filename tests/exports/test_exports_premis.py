"""``panchro export --premis``: a PREMIS 3 record that the official schema accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from exports_rows import CHECKPOINT, FAILURE_CODE, NAME, build, sha
from lxml import etree
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from catalog import Image, create_or_get_collection, transaction
from exports.objects import Agent
from exports.premis import PREMIS_NAMESPACE, SCHEMA_PATH, export_premis
from panchro.cli import cli
from storage import LocalStorage

P = {"p": PREMIS_NAMESPACE}


@pytest.fixture(scope="module")
def premis_schema() -> etree.XMLSchema:
    """The shipped PREMIS 3.0 schema; parsing it must not need the network."""
    parser = etree.XMLParser(no_network=True)
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH), parser))


def _texts(doc: etree._ElementTree, path: str) -> list[str]:
    return [str(value) for value in doc.xpath(path, namespaces=P)]


def test_premis_record_validates_and_holds_every_object_event_and_agent(
    sessions: sessionmaker[Session], tmp_path: Path, premis_schema: etree.XMLSchema
) -> None:
    built = build(sessions, LocalStorage(), str(tmp_path / "scans"), str(tmp_path / "colour"))
    target = tmp_path / "export" / "premis.xml"

    counts = export_premis(sessions, NAME, Agent("9.9.9", "exporter"), target)

    doc = etree.parse(str(target))
    premis_schema.assertValid(doc)
    src, out = built.source, built.output
    objects = _texts(doc, "/p:premis/p:object/p:objectIdentifier/p:objectIdentifierValue/text()")
    sources = [f"{src}/a.png", f"{src}/b.png", f"{src}/notes.txt", f"{src}/d.png"]
    assert objects == [sources[0], f"{out}/a.png", f"{out}/access/a.jpg", *sources[1:]]
    digest = f"//p:object[.//p:objectIdentifierValue='{out}/a.png']//p:messageDigest/text()"
    assert _texts(doc, digest) == [sha(built.files[f"{out}/a.png"])]
    assert _texts(doc, "//p:object[1]//p:formatName/text()") == ["image/png"]
    events = doc.xpath("/p:premis/p:event", namespaces=P)
    kinds = [event.findtext("p:eventType", namespaces=P) for event in events]
    # 4 ingestions, 3 tries (an OOM retry, a success, a failure), 1 access copy, 1 check.
    assert sorted(kinds) == sorted(["ingestion"] * 4 + ["creation"] * 4 + ["fixity check"])
    details = " ".join(_texts(doc, "//p:eventDetail/text()"))
    for fact in ("input size 768 px", "precision fp32", "device cpu", "host cpu0@host-a"):
        assert fact in details
    assert f"checkpoint sha256 {CHECKPOINT}" in details and "upsampling guided" in details
    notes = " ".join(_texts(doc, "//p:eventOutcomeDetailNote/text()"))
    assert f"failure code: {FAILURE_CODE}" in notes and "out of memory" in notes
    agents = _texts(doc, "/p:premis/p:agent/p:agentIdentifier/p:agentIdentifierValue/text()")
    assert agents[:2] == ["panchro 9.9.9", CHECKPOINT]
    assert {"cpu0@host-a", "cpu1@host-b", "host-a panchro 0.0.9"} <= set(agents)
    linked = set(_texts(doc, "//p:linkingAgentIdentifierValue/text()"))
    assert linked == set(agents), "every agent an event names is described, and only those"
    assert (counts.objects, counts.events, counts.agents) == (6, len(events), len(agents))


def test_premis_record_of_a_collection_larger_than_a_page_lists_each_image_once(
    sqlite_sessions: sessionmaker[Session], tmp_path: Path, premis_schema: etree.XMLSchema
) -> None:
    with transaction(sqlite_sessions) as db:
        collection, _ = create_or_get_collection(db, "big", "/scans/big", "/out/big")
        rows = [
            {
                "collection_id": collection.id,
                "source_uri": f"/scans/big/{i:05d}.tif",
                "relative_path": f"{i:05d}.tif",
                "output_uri": f"/out/big/{i:05d}.tif",
                "source_size": i,
            }
            for i in range(501)
        ]
        db.execute(insert(Image), rows)
    target = tmp_path / "big.xml"

    counts = export_premis(sqlite_sessions, "big", Agent("1", "h"), target)

    doc = etree.parse(str(target))
    premis_schema.assertValid(doc)
    names = _texts(doc, "/p:premis/p:object/p:originalName/text()")
    assert names == [f"{i:05d}.tif" for i in range(501)]
    assert counts.events == 501


def test_export_premis_refuses_an_existing_file_and_an_unknown_collection(
    sqlite_url: str, local_built: object, tmp_path: Path
) -> None:
    existing = tmp_path / "premis.xml"
    existing.write_text("not ours")

    taken = CliRunner().invoke(
        cli, ["--database-url", sqlite_url, "export", NAME, "--premis", str(existing)]
    )
    unknown = CliRunner().invoke(
        cli, ["--database-url", sqlite_url, "export", "nope", "--premis", str(tmp_path / "n.xml")]
    )
    nothing = CliRunner().invoke(cli, ["--database-url", sqlite_url, "export", NAME])

    assert taken.exit_code == 1 and "exists" in taken.stderr, taken.output
    assert existing.read_text() == "not ours"
    assert unknown.exit_code == 1 and "no collection" in unknown.stderr, unknown.output
    assert not (tmp_path / "n.xml").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert nothing.exit_code == 2 and "--premis" in nothing.stderr
