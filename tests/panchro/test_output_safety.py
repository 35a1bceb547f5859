"""The CLI never writes over what is not its own: submit, run and colorize, as a user hit it.

- ``panchro submit hz/scans/box1 --output hz/scans`` was accepted and a worker overwrote the
  unrelated original ``hz/scans/p000.png``: now refused in one line, nothing registered;
  ``--force`` registers it and the original still survives the run.
- Two collections shared an output folder: refused.
- ``panchro colorize in out`` mapped ``a.tif`` and ``a.tiff`` to one ``out/a.tif`` and
  skipped the second silently: now two outputs, and a file panchro did not write is
  reported as refused, left byte-identical.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from click.testing import CliRunner, Result
from PIL import Image as PILImage
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from submit_helpers import assert_one_line_error, images, run_submit

from panchro.cli import cli

#: Smallest input size: keeps the model's forward quick on the CPU.
SIZE = "256"


pytestmark = pytest.mark.usefixtures("local_model_env")


def _cli(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _gray(path: Path, level: int = 90) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("L", (40, 32), level).save(path)
    return path


def _registered(url: str) -> dict[str, Any]:
    try:
        return dict(images(url))
    except OperationalError:  # refused before the catalog was even created
        return {}


def _hz(tmp_path: Path) -> Path:
    """The user's archive: an original at the top and a box of scans below it."""
    scans = tmp_path / "hz" / "scans"
    _gray(scans / "p000.png", 10)
    _gray(scans / "box1" / "p000.png", 200)
    _gray(scans / "box1" / "p001.png", 120)
    return scans


def test_submit_into_a_folder_that_holds_the_source_is_refused_and_registers_nothing(
    tmp_path: Path, catalog_url: str
) -> None:
    scans = _hz(tmp_path)

    result = run_submit(
        catalog_url, "redis://127.0.0.1:1/0", scans / "box1", scans, "--no-dispatch"
    )

    assert_one_line_error(result, 1, "contains the source", "--force")
    assert _registered(catalog_url) == {}
    forced = run_submit(
        catalog_url, "redis://127.0.0.1:1/0", scans / "box1", scans, "--no-dispatch", "--force"
    )
    assert forced.exit_code == 0, forced.output
    assert set(images(catalog_url)) == {"p000.png", "p001.png"}


def test_submit_into_another_collections_output_is_refused(
    tmp_path: Path, catalog_url: str
) -> None:
    _gray(tmp_path / "a" / "p.png")
    _gray(tmp_path / "b" / "p.png")
    broker = "redis://127.0.0.1:1/0"
    first = run_submit(catalog_url, broker, tmp_path / "a", tmp_path / "colour", "--no-dispatch")
    assert first.exit_code == 0, first.output

    second = run_submit(
        catalog_url, broker, tmp_path / "b", tmp_path / "colour", "--no-dispatch", name="other"
    )

    assert_one_line_error(second, 1, "collection 'c'", "write over each other's copies")


def test_run_with_force_still_leaves_the_unrelated_original_untouched(tmp_path: Path) -> None:
    scans = _hz(tmp_path)
    original = (scans / "p000.png").read_bytes()

    refused = _cli("run", str(scans / "box1"), "--output", str(scans), "--untrained")
    assert refused.exit_code == 1
    assert "contains the source" in refused.output
    assert not (scans / ".panchro").exists()  # refused before its catalog was made there
    forced = _cli(
        "run",
        str(scans / "box1"),
        "--output",
        str(scans),
        "--untrained",
        "--size",
        SIZE,
        "--force",
    )

    assert forced.exit_code == 1, forced.output
    assert (scans / "p000.png").read_bytes() == original
    assert (scans / "p001.png").is_file()
    engine = create_engine(f"sqlite:///{scans / '.panchro' / 'catalog.sqlite3'}")
    with engine.connect() as conn:
        rows = dict(conn.execute(text("SELECT relative_path, last_error FROM images")).all())
    engine.dispose()
    assert "is not a file panchro wrote for this image; left untouched" in rows["p000.png"]
    assert rows["p001.png"] is None
    assert not [p for p in scans.rglob("*.tmp")]


def test_colorize_gives_a_tif_and_a_tiff_two_outputs(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.mkdir()
    pixels = (np.arange(32 * 40, dtype=np.uint16).reshape(32, 40) * 50).astype(np.uint16)
    tifffile.imwrite(source / "a.tif", pixels)
    tifffile.imwrite(source / "a.tiff", pixels[::-1])
    _gray(source / "x.png")
    shutil.copy(source / "x.png", source / "x.PNG")

    first = _cli("colorize", str(source), str(tmp_path / "out"), "--untrained", "--size", SIZE)
    again = _cli("colorize", str(source), str(tmp_path / "out"), "--untrained", "--size", SIZE)

    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "a.tif",
        "a.tiff",
        "x.PNG",
        "x.png",
    ]
    assert "4 colorized, 0 skipped" in first.output
    assert "0 colorized, 4 skipped" in again.output


def test_colorize_refuses_a_file_it_did_not_write_even_with_overwrite(tmp_path: Path) -> None:
    source = tmp_path / "in"
    _gray(source / "a.png")
    _gray(source / "b.png")
    foreign = _gray(tmp_path / "out" / "a.png", 33)
    before = foreign.read_bytes()

    result = _cli(
        "colorize",
        str(source),
        str(tmp_path / "out"),
        "--untrained",
        "--size",
        SIZE,
        "--overwrite",
    )

    assert result.exit_code == 1
    assert "REFUSED" in result.output and "is not a file panchro wrote" in result.output
    assert "1 colorized, 0 skipped" in result.output and "1 refused" in result.output
    assert foreign.read_bytes() == before
    assert (tmp_path / "out" / "b.png").is_file()
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".tmp")]
