"""``--derivative`` and ``--sidecars`` on ``panchro submit``, ``run`` and ``colorize``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image as PILImage
from sqlalchemy import create_engine, text

from panchro.cli import cli


def write_gray_png(path: Path, size: tuple[int, int] = (56, 40)) -> Path:
    """An 8-bit grayscale PNG (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.linear_gradient("L").resize(size).save(path)
    return path


#: The one form a spec may take, as every refusal names it.
FORM = "give jpeg:LONG_EDGE, LONG_EDGE being the longest side in pixels (1-65500)"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("spec", ["jpeg:0", "png:100", "jpeg:abc", "jpeg", "jpeg:-5"])
def test_a_bad_derivative_is_a_usage_error_naming_the_form_in_every_command(
    spec: str, tmp_path: Path
) -> None:
    scan = write_gray_png(tmp_path / "scans" / "a.png")
    dest = tmp_path / "colour"
    commands = {
        "submit": ["submit", str(scan.parent), "--collection", "c", "--output", str(dest)],
        "run": ["run", str(scan.parent), "--output", str(dest)],
        "colorize": ["colorize", str(scan), str(dest / "a.png")],
    }
    database = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    for command, arguments in commands.items():
        result = CliRunner().invoke(
            cli, ["--database-url", database, *arguments, "--derivative", spec]
        )
        assert result.exit_code == 2, (command, result.output)
        assert "Invalid value for '--derivative'" in result.output, command
        assert f"{spec!r} is not a derivative; {FORM}" in " ".join(result.output.split())
    assert not dest.exists() and not (tmp_path / "catalog.sqlite3").exists()


@pytest.mark.usefixtures("local_model_env")
def test_run_writes_copies_and_sidecars_and_records_them(tmp_path: Path) -> None:
    scan = write_gray_png(tmp_path / "scans" / "a.png", size=(48, 40))
    dest = tmp_path / "colour"
    result = CliRunner().invoke(
        cli,
        ["run", str(scan.parent), "--output", str(dest), "--untrained", "--size", "256"]
        + ["--derivative", "jpeg:32", "--sidecars"],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output

    engine = create_engine(f"sqlite:///{dest / '.panchro' / 'catalog.sqlite3'}")
    with engine.connect() as conn:
        options, output_sha256, sidecar_uri = conn.execute(
            text("SELECT options, output_sha256, sidecar_uri FROM collections, images")
        ).one()
        rows = conn.execute(text("SELECT uri, sha256, width, height FROM derivatives")).all()
    engine.dispose()
    assert json.loads(options) == {"derivatives": ["jpeg:32"], "sidecars": True}
    copy = dest / "a.png.32.jpg"
    assert [tuple(row) for row in rows] == [(str(copy), _sha256(copy), 32, 27)]
    assert sidecar_uri == str(dest / "a.png.json")
    sidecar = json.loads((dest / "a.png.json").read_text())
    assert sidecar["output"]["sha256"] == output_sha256 == _sha256(dest / "a.png")
    assert sidecar["derivatives"][0]["sha256"] == _sha256(copy)
    assert sidecar["model"]["untrained"] is True
