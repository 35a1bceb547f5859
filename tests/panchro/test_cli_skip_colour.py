"""``--skip-colour`` on ``panchro submit`` and ``panchro run``: stored, honoured, summarised."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import create_engine, text
from submit_helpers import collection, run_submit

from panchro.cli import cli


def _write_colour(path: Path) -> None:
    scene = np.zeros((48, 64, 3), np.uint8)
    scene[:24] = [90, 140, 220]
    scene[24:, :32] = [60, 130, 50]
    scene[24:, 32:] = [220, 170, 140]
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(scene).save(path)


def test_submit_keeps_skip_colour_until_a_submission_gives_no_skip_colour(
    catalog_url: str, redis_url: str, scans: Path, tmp_path: Path
) -> None:
    output = tmp_path / "colour"
    stored = []
    for flags in (["--skip-colour"], [], ["--no-skip-colour"]):
        result = run_submit(catalog_url, redis_url, scans, output, *flags, "--no-dispatch")
        assert result.exit_code == 0, result.output
        stored.append(collection(catalog_url, "c").options.get("skip_colour"))

    assert stored == [True, True, False]


@pytest.mark.usefixtures("local_model_env")
def test_run_skips_an_original_in_colour_and_says_why_without_claiming_a_trained_model(
    tmp_path: Path,
) -> None:
    source, dest = tmp_path / "scans", tmp_path / "out"
    _write_colour(source / "box" / "harbour.png")

    result = CliRunner().invoke(
        cli,
        ["run", str(source), "-o", str(dest), "--untrained", "--skip-colour", "--size", "256"],
        catch_exceptions=False,
    )

    assert result.exit_code == 0, result.output
    assert "1 skipped" in result.output
    assert re.search(r"box/harbour\.png: the original is already in colour", result.output)
    assert "UNTRAINED random weights" in result.output
    assert not re.search(r"(?<!un)trained", result.output, re.IGNORECASE), result.output
    assert not (dest / "box" / "harbour.png").exists()
    engine = create_engine(f"sqlite:///{dest / '.panchro' / 'catalog.sqlite3'}")
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT status, failure_code FROM images")).all()
    finally:
        engine.dispose()
    assert [tuple(row) for row in rows] == [("skipped", "skip.colour")]
