"""`panchro doctor`: the checks report what is there, and fail only on real faults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ddcolor.build import build_ddcolor
from ddcolor.checkpoints import sha256_file
from migrations.runner import upgrade
from panchro.cli import cli


@pytest.fixture(autouse=True)
def _isolated_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("PANCHRO_WEIGHTS", "PANCHRO_DATABASE_URL", "PANCHRO_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PANCHRO_WEIGHTS_DIR", str(tmp_path / "weights"))
    # A closed port: the S3 check must report, not hang or crash.
    monkeypatch.setenv("PANCHRO_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


def doctor(*args: str) -> tuple[int, dict[str, dict[str, str]]]:
    """Run ``panchro doctor --json`` and index its checks by name."""
    result = CliRunner().invoke(cli, [*args, "doctor", "--json"], catch_exceptions=False)
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    return result.exit_code, checks


def test_doctor_validates_a_checkpoint_and_names_its_model_and_sha256(
    tmp_path: Path, redis_url: str
) -> None:
    weights = tmp_path / "ddcolor_paper_tiny.pth"
    torch.save({"params": build_ddcolor("ddcolor_paper_tiny").state_dict()}, weights)
    database = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    upgrade(database)

    code, checks = doctor("--database-url", database, "--broker-url", redis_url)
    assert checks["weights"]["outcome"] == "warn"  # none configured yet

    result = CliRunner().invoke(
        cli,
        [
            "--database-url",
            database,
            "--broker-url",
            redis_url,
            "doctor",
            "--json",
            "--weights",
            str(weights),
        ],
    )
    checks = {check["name"]: check for check in json.loads(result.stdout)}
    assert result.exit_code == 0
    assert checks["weights"]["outcome"] == "ok"
    assert sha256_file(weights) in checks["weights"]["detail"]
    assert "ddcolor_paper_tiny" in checks["weights"]["detail"]
    assert checks["database"]["outcome"] == "ok"
    assert checks["broker"]["outcome"] == "ok"
    assert checks["torch"]["detail"].startswith(f"PyTorch {torch.__version__}")
    assert checks["s3"]["outcome"] == "warn"


def test_doctor_fails_on_a_damaged_checkpoint(tmp_path: Path) -> None:
    weights = tmp_path / "broken.pth"
    weights.write_bytes(b"\x80\x04 not a checkpoint at all")
    result = CliRunner().invoke(
        cli, ["--broker-url", "redis://127.0.0.1:9/0", "doctor", "--weights", str(weights)]
    )
    assert result.exit_code == 1
    assert "[FAIL] weights" in result.output


def test_doctor_warns_when_the_catalog_has_no_schema(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    code, checks = doctor("--database-url", database, "--broker-url", "redis://127.0.0.1:9/0")
    assert checks["database"]["outcome"] == "warn"
    assert "panchro db upgrade" in checks["database"]["detail"]
    assert checks["broker"]["outcome"] == "warn"
    assert code == 0


def test_doctor_checks_the_fetched_checkpoint_when_none_is_configured(
    tmp_path: Path, redis_url: str
) -> None:
    # What `panchro weights fetch` leaves: <name>.bin and its manifest.
    weights = tmp_path / "weights" / "ddcolor_paper_tiny.bin"
    weights.parent.mkdir()
    torch.save(build_ddcolor("ddcolor_paper_tiny").state_dict(), weights)
    manifest = {"name": "ddcolor_paper_tiny", "sha256": sha256_file(weights), "source": "test"}
    weights.with_name(weights.name + ".json").write_text(json.dumps(manifest))

    _, checks = doctor("--broker-url", redis_url)

    assert checks["weights"]["outcome"] == "ok"
    assert "ddcolor_paper_tiny (tiny)" in checks["weights"]["detail"]
    assert f"fetched into {weights.parent}" in checks["weights"]["detail"]


def test_doctor_lists_the_checkpoint_files_it_found_but_cannot_use(tmp_path: Path) -> None:
    folder = tmp_path / "weights"
    folder.mkdir()
    (folder / "mine.bin").write_bytes(b"x")

    _, checks = doctor("--broker-url", "redis://127.0.0.1:9/0")

    assert checks["weights"]["outcome"] == "warn"
    assert "files there: mine.bin" in checks["weights"]["detail"]
