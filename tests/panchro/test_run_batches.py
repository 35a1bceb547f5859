"""`panchro run --batch N`: the embedded worker colorizes N images per forward."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from panchro.cli import cli

#: The sample collection shipped with the project.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.usefixtures("local_model_env")


def test_run_with_batch_2_colorizes_two_images_per_forward(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = tmp_path / "scans"
    source.mkdir()
    for name in ("camera.jpg", "coins.png", "coins-16bit.tif", "brick-vignette.png"):
        shutil.copy(EXAMPLES / name, source / name)
    (source / "zz-broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    dest = tmp_path / "colour"
    caplog.set_level(logging.INFO, logger="workers.process")

    result = CliRunner().invoke(
        cli,
        ["run", str(source), "--output", str(dest), "--untrained", "--size", "256"]
        + ["--batch", "2", "--prefetch", "1"],
        catch_exceptions=False,
    )

    assert result.exit_code == 1, result.output  # the broken file fails, alone
    assert "4 colorized, 1 failed" in result.output
    batches = [r for r in caplog.records if "in one forward at 256 px" in r.getMessage()]
    assert [r.__dict__["batch"] for r in batches] == [2, 2]
    engine = create_engine(f"sqlite:///{dest / '.panchro' / 'catalog.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT i.status, a.outcome, i.input_size FROM images i "
                    "JOIN attempts a ON a.image_id = i.id ORDER BY i.id"
                )
            ).all()
    finally:
        engine.dispose()
    assert sorted((status, outcome) for status, outcome, _ in rows) == [
        ("done", "done"),
        ("done", "done"),
        ("done", "done"),
        ("done", "done"),
        ("failed", "failed"),
    ]


def test_batch_must_be_a_positive_count(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["run", str(tmp_path), "--output", str(tmp_path / "out"), "--batch", "0"]
    )
    assert result.exit_code == 2 and "--batch" in result.output
