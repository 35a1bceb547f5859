"""Every bad URL, location or option ends a command with one ``Error:`` line, never a traceback.

Configuration errors (URLs, weights, locations) exit with status 1, as every
``click.ClickException`` does; malformed options exit with click's usage status 2.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from panchro.cli import cli

#: A small image shipped with the project.
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "coins.png"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DATABASE_URL", "BROKER_URL", "S3_ENDPOINT_URL", "WEIGHTS"):
        monkeypatch.delenv(f"PANCHRO_{name}", raising=False)
    monkeypatch.setenv("PANCHRO_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("PANCHRO_DEVICE", "cpu")
    monkeypatch.chdir(tmp_path)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def _one_line(result: Result, status: int, *needles: str) -> str:
    """Check the command failed with ``status`` and one error line holding the needles."""
    assert result.exit_code == status, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("Error")]
    assert len(errors) == 1, result.output
    if status == 1:  # a configuration error: that line is all there is
        assert result.output.strip() == errors[0], result.output
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        ("postgres://archive:secret@db/panchro", ("postgresql+psycopg://", "***")),
        ("mysql://db/panchro", ("mysql is not supported", "postgresql+psycopg://")),
        ("notaurl", ("is not a database URL", "sqlite:///PATH")),
        ("postgresql+psycopg2://db/panchro", ("cannot be loaded", "psycopg2")),
        ("oracle+cx_oracle://db/panchro", ("oracle is not supported",)),
    ],
)
def test_bad_database_urls_say_what_to_write_instead(url: str, needles: tuple[str, ...]) -> None:
    line = _one_line(_invoke("--database-url", url, "status"), 1, "database_url", *needles)

    assert "secret" not in line
    assert "Value error" not in line


def test_an_unreachable_database_is_one_line() -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:{_closed_port()}/catalog"

    _one_line(_invoke("--database-url", url, "status"), 1, "catalog database unavailable")


@pytest.mark.parametrize(
    ("url", "needles"),
    [
        ("notaurl", ("is not a broker URL", "redis://HOST:6379/0")),
        ("http://broker:6379/0", ("is not a broker URL",)),
        ("redis://:secret@/0", ("names no host", "***")),
    ],
)
def test_bad_broker_urls_say_what_to_write_instead(url: str, needles: tuple[str, ...]) -> None:
    line = _one_line(_invoke("--broker-url", url, "status"), 1, "broker_url", *needles)

    assert "secret" not in line


@pytest.mark.parametrize("url", ["notaurl", "s3.example.org", "ftp://s3.example.org"])
def test_bad_s3_endpoint_urls_say_what_to_write_instead(url: str) -> None:
    _one_line(_invoke("--s3-endpoint-url", url, "status"), 1, "http(s)://HOST[:PORT]")


@pytest.mark.parametrize(
    ("source", "output", "needle"),
    [
        ("s3://", "colour", "S3 URI without a bucket"),
        ("ftp://host/scans", "colour", "unsupported scheme 'ftp'"),
        (str(EXAMPLE.parent), "s3://", "S3 URI without a bucket"),
        (str(EXAMPLE.parent), "gs://bucket/colour", "unsupported scheme 'gs'"),
    ],
)
def test_run_refuses_bad_locations_before_creating_anything(
    source: str, output: str, needle: str, tmp_path: Path
) -> None:
    _one_line(_invoke("run", source, "--output", output, "--untrained"), 1, needle)

    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_submit_refuses_a_bucketless_source(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    args = ("--database-url", url, "submit", "s3://", "--collection", "c", "--output", "out")

    _one_line(_invoke(*args), 1, "S3 URI without a bucket")


def test_colorize_refuses_a_uri_where_a_local_path_is_needed(tmp_path: Path) -> None:
    result = _invoke("colorize", str(EXAMPLE), "s3://bucket/colour.png", "--untrained")

    _one_line(result, 2, "OUTPUT must be a local file or folder, not a URI")
    assert sorted(path.name for path in tmp_path.iterdir()) == []


def test_unloadable_weights_are_one_line_in_run_and_colorize(tmp_path: Path) -> None:
    weights = tmp_path / "ddcolor.pth"
    weights.write_bytes(b"not a checkpoint")

    ran = _invoke("run", str(EXAMPLE.parent), "--output", "colour", "--weights", str(weights))
    colorized = _invoke("colorize", str(EXAMPLE), "out.png", "--weights", str(weights))

    _one_line(ran, 1, "cannot load the checkpoint", str(weights))
    _one_line(colorized, 1, "loading the model", str(weights))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["ddcolor.pth"]


@pytest.mark.parametrize(
    "args",
    [
        ("run", "scans", "--output", "colour", "--size", "100"),
        ("run", "scans", "--output", "colour", "--size", "big"),
        ("colorize", str(EXAMPLE), "out.png", "--size", "4096"),
        ("submit", "scans", "--collection", "c", "--output", "colour", "--size", "33"),
    ],
)
def test_bad_sizes_are_usage_errors(args: tuple[str, ...]) -> None:
    _one_line(_invoke(*args), 2, "--size")
