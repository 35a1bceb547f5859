"""``panchro report``: the command finds its catalog like the others and never clobbers a file.

Catalogs are real (SQLite and PostgreSQL), filled through ``catalog``'s own functions;
no model runs here (the run tests check a real run's thumbnails and report).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from catalog import (
    ScannedImage,
    create_or_get_collection,
    make_sessionmaker,
    register_images,
    transaction,
)
from migrations.runner import upgrade
from panchro.cli import cli


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def _collection(url: str, tmp_path: Path) -> None:
    upgrade(url)
    sessions = make_sessionmaker(url)
    try:
        with transaction(sessions) as db:
            collection, _ = create_or_get_collection(
                db, "1920s", str(tmp_path / "scans"), str(tmp_path / "colour")
            )
            register_images(
                db,
                collection.id,
                [
                    ScannedImage(str(tmp_path / "scans" / n), n, str(tmp_path / "colour" / n))
                    for n in ("a.tif", "b.tif")
                ],
            )
    finally:
        sessions.kw["bind"].dispose()


def test_report_writes_name_report_html_here_from_the_configured_catalog(
    catalog_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _collection(catalog_url, tmp_path)
    monkeypatch.chdir(tmp_path)

    result = _invoke("--database-url", catalog_url, "report", "1920s")

    assert result.exit_code == 0, result.output
    assert result.output.startswith("report of 1920s (2 images, ")
    html = (tmp_path / "1920s-report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>\n<!-- panchro report")
    assert '<div class="number" data-count="pending"><b>2</b>pending</div>' in html


def test_report_of_an_unknown_collection_is_one_line_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    _collection(url, tmp_path)
    monkeypatch.chdir(tmp_path)

    result = _invoke("--database-url", url, "report", "1930s")

    assert result.exit_code == 1
    assert result.output.strip() == ("Error: writing the report: no collection with name '1930s'")
    assert not (tmp_path / "1930s-report.html").exists()


def test_report_refuses_to_replace_a_file_that_is_not_a_report(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    _collection(url, tmp_path)
    notes = tmp_path / "notes.html"
    notes.write_text("the archivist's notes")

    result = _invoke("--database-url", url, "report", "1920s", "--output", str(notes))

    assert result.exit_code == 1
    assert "is not a panchro report; left untouched" in result.output
    assert notes.read_text() == "the archivist's notes"
