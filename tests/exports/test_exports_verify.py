"""``panchro verify``: every file re-hashed against the catalog, each check recorded."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner
from exports_rows import NAME, Built, sha
from lxml import etree
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from catalog import Event
from exports.fixity import FIXITY_CHECK
from exports.objects import Agent
from exports.premis import PREMIS_NAMESPACE, export_premis
from panchro.cli import cli
from storage import Storage, StorageOptions


def _checks(sessions: sessionmaker[Session]) -> dict[str, tuple[str | None, str, str | None]]:
    """The fixity events this test wrote (not the built one's), by the file they are about."""
    with sessions.begin() as db:
        rows = db.scalars(select(Event).where(Event.agent.not_like("host-a %"))).all()
    assert all(row.event_type == FIXITY_CHECK and row.detail for row in rows)
    return {
        str(row.detail).split(": expected")[0]: (row.object_role, row.outcome, row.agent)
        for row in rows
    }


def test_verify_records_one_ok_event_per_file_and_exits_zero(
    sqlite_url: str, sqlite_sessions: sessionmaker[Session], local_built: Built
) -> None:
    result = CliRunner().invoke(cli, ["--database-url", sqlite_url, "verify", NAME, "--jobs", "2"])

    assert result.exit_code == 0, result.output
    assert "4 files checked (4 ok, 0 changed, 0 missing, 0 error)" in result.stdout
    assert "2 without a recorded digest" in result.stdout
    src, out = local_built.source, local_built.output
    checks = _checks(sqlite_sessions)
    assert sorted(checks) == sorted(
        [f"{src}/a.png", f"{src}/b.png", f"{out}/a.png", f"{out}/access/a.jpg"]
    )
    assert {role for role, _, _ in checks.values()} == {"source", "output", "derivative"}
    assert {outcome for _, outcome, _ in checks.values()} == {"ok"}
    assert all(
        agent.startswith(f"{socket.gethostname()} panchro ") for _, _, agent in checks.values()
    )


def test_verify_reports_changed_and_missing_files_exits_one_and_feeds_the_premis_record(
    sqlite_url: str, sqlite_sessions: sessionmaker[Session], local_built: Built, tmp_path: Path
) -> None:
    out = local_built.output
    Path(f"{out}/a.png").write_bytes(b"overwritten")
    Path(f"{out}/access/a.jpg").unlink()

    result = CliRunner().invoke(cli, ["--database-url", sqlite_url, "verify", NAME])

    assert result.exit_code == 1, result.output
    assert (
        f"changed: output {out}/a.png: expected sha256 {sha(local_built.files[f'{out}/a.png'])}"
        in result.stdout
    )
    assert f", found {sha(b'overwritten')}" in result.stdout
    assert f"missing: derivative {out}/access/a.jpg" in result.stdout
    outcomes = {uri: outcome for uri, (_, outcome, _) in _checks(sqlite_sessions).items()}
    assert outcomes[f"{out}/a.png"] == "changed" and outcomes[f"{out}/access/a.jpg"] == "missing"
    assert list(outcomes.values()).count("ok") == 2
    export_premis(sqlite_sessions, NAME, Agent("1", "h"), tmp_path / "p.xml")
    missing = etree.parse(str(tmp_path / "p.xml")).xpath(
        "//p:event[p:eventOutcomeInformation/p:eventOutcome='missing']"
        "/p:linkingObjectIdentifier/p:linkingObjectIdentifierValue/text()",
        namespaces={"p": PREMIS_NAMESPACE},
    )
    assert missing == [f"{out}/access/a.jpg"]


@pytest.mark.s3
def test_verify_reads_files_on_s3(
    sqlite_url: str, s3_built: Built, s3_storage: Storage, s3_options: StorageOptions
) -> None:
    s3_storage.write(f"{s3_built.source}/b.png", b"rescanned")
    assert s3_options.endpoint_url is not None

    result = CliRunner().invoke(
        cli,
        [
            "--database-url",
            sqlite_url,
            "--s3-endpoint-url",
            s3_options.endpoint_url,
            "verify",
            NAME,
        ],
    )

    assert result.exit_code == 1, result.output
    assert "4 files checked (3 ok, 1 changed, 0 missing, 0 error)" in result.stdout
    assert f"changed: source {s3_built.source}/b.png" in result.stdout
