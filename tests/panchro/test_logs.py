"""panchro.logs: JSON lines, one logging configuration, --log-format and --loglevel."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from panchro.logs import (
    JsonFormatter,
    configure_logging,
    current_log_format,
    log_format_option,
    loglevel_option,
    make_formatter,
)


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "workers.process", logging.INFO, __file__, 1, "%s: %s", ("a", 7), None
    )
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_message_and_the_structured_fields() -> None:
    line = JsonFormatter({"worker": "gpu0@h"}).format(
        _record(collection="1920s", image_id=7, device="cuda:0", duration_s=1.25, other=1)
    )

    entry = json.loads(line)
    assert "\n" not in line
    assert entry["message"] == "a: 7"
    assert (entry["level"], entry["logger"]) == ("INFO", "workers.process")
    assert entry["timestamp"].endswith("+00:00")
    assert {key: entry[key] for key in ("collection", "image_id", "device", "duration_s")} == {
        "collection": "1920s",
        "image_id": 7,
        "device": "cuda:0",
        "duration_s": 1.25,
    }
    assert entry["worker"] == "gpu0@h"
    assert "other" not in entry


def test_json_lines_keep_the_traceback_on_one_line() -> None:
    try:
        raise ValueError("bad scan")
    except ValueError:
        record = _record()
        record.exc_info = sys.exc_info()

    entry = json.loads(JsonFormatter().format(record))

    assert "ValueError: bad scan" in entry["exception"]


def test_make_formatter_refuses_an_unknown_format() -> None:
    with pytest.raises(ValueError, match="text, json"):
        make_formatter("xml")


def test_options_accept_any_case_and_pass_on_upper_case_levels() -> None:
    @click.command()
    @loglevel_option()
    @log_format_option
    def command(loglevel: str) -> None:
        click.echo(f"{loglevel} {current_log_format()}")

    result = CliRunner().invoke(command, ["--loglevel", "warning", "--log-format", "JSON"])
    configure_logging(log_format="text")

    assert result.exit_code == 0, result.output
    assert result.output.strip() == "WARNING json"


def test_panchro_logs_json_lines_on_stderr(tmp_path: Path) -> None:
    catalog = f"sqlite:///{tmp_path / 'catalog.sqlite3'}"
    done = subprocess.run(
        [sys.executable, "-m", "panchro.cli", "-vv", "--log-format", "json"]
        + ["--database-url", catalog, "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )

    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 0, done.stderr
    assert lines, done.stderr
    assert all(json.loads(line)["level"] for line in lines), done.stderr
