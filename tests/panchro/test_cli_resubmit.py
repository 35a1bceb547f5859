"""``panchro submit`` and ``panchro run`` again on a known collection: settings not given are
kept, and the summary says each one that changed, old -> new."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from submit_helpers import collection, run_submit

from catalog import make_sessionmaker, sqlite_url_for
from migrations import upgrade
from panchro.cli import cli
from scheduler import CollectionSettings, submit
from storage import LocalStorage

#: A broker that is never contacted (``--no-dispatch``).
NO_BROKER = "redis://127.0.0.1:1/0"


def test_plain_resubmit_keeps_priority_size_and_start_time(
    catalog_url: str, scans: Path, tmp_path: Path
) -> None:
    output = tmp_path / "colour"

    def again(*args: str) -> str:
        result = run_submit(catalog_url, NO_BROKER, scans, output, "--no-dispatch", *args)
        assert result.exit_code == 0, result.output
        return result.stdout

    again("--priority", "5", "--size", "256", "--not-before", "22:00")
    plain = again()
    stored = collection(catalog_url, "c")
    assert (stored.input_size, stored.priority, stored.not_before) == (256, 5, "22:00")
    assert stored.upsample == "guided"
    assert "resubmitted" in plain and "settings  unchanged" in plain
    assert "  changed   " not in plain

    bigger = again("--size", "512", "--upsample", "nearest")
    cleared = again("--not-before", "none")

    assert "changed   input size: 256 -> 512\n  changed   upsample: guided -> nearest\n" in bigger
    assert "priority" not in bigger and "not before" not in bigger
    assert "changed   not before: 22:00 -> none" in cleared
    stored = collection(catalog_url, "c")
    assert (stored.input_size, stored.upsample, stored.priority) == (512, "nearest", 5)
    assert stored.not_before is None


@pytest.mark.usefixtures("local_model_env")
def test_run_again_keeps_the_untrained_model_and_says_what_changed(tmp_path: Path) -> None:
    source, dest = tmp_path / "scans", tmp_path / "colour"
    source.mkdir()
    # What a first `panchro run --untrained --size 256 --upsample nearest` records.
    url = sqlite_url_for(dest)
    upgrade(url)
    sessions = make_sessionmaker(url)
    first = CollectionSettings(
        model_name="ddcolor_paper_tiny",
        untrained=True,
        input_size=256,
        upsample="nearest",
        precision="fp32",
    )
    submit(
        sessions,
        name="scans",
        source=source,
        output=dest,
        storage=LocalStorage(),
        send=None,
        max_in_flight=1,
        settings=first,
    )
    sessions.kw["bind"].dispose()

    # No --untrained and no weights anywhere: the collection's model is the one loaded.
    result = CliRunner().invoke(cli, ["run", str(source), "-o", str(dest), "--size", "288"])

    assert result.exit_code == 0, result.output
    assert "changed   input size: 256 -> 288" in result.output
    assert "size=288, upsample=nearest" in result.output
    assert "UNTRAINED" in result.output or "untrained" in result.output
    stored = collection(url, "scans")
    assert (stored.untrained, stored.input_size, stored.upsample) == (True, 288, "nearest")
