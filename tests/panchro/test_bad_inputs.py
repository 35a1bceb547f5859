"""The bad-input corpus through the real ``panchro run``: every file colorized or refused.

One run of the embedded pipeline (SQLite catalog, the untrained tiny model at 256 px on the
CPU) over a corpus of more than fifty kinds of bad and unusual input (``bad_inputs.py``).
For each kind: colorized right (an output of the same pixel size, the original's bytes
unchanged) or refused with a reason that names the problem, and every file of the corpus
has exactly one catalog row, except hidden and system files, which the summary counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from bad_inputs import CORPUS, DONE, IGNORED, SKIPPED, UNREADABLE, Kind, write_corpus
from click.testing import CliRunner, Result
from PIL import Image as PILImage
from PIL import ImageOps
from sqlalchemy import create_engine, text

from panchro.cli import cli
from storage.uri import parse_uri

#: Pillow warns when it reads the corpus's corrupt EXIF (in the run and here); it is expected.
pytestmark = pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning")

#: Smallest model input size: each image takes about a second on one CPU thread.
SIZE = "256"


@dataclass(frozen=True)
class Row:
    """One catalog row of the corpus run."""

    path: str
    status: str
    reason: str | None
    output: Path
    code: str | None


@dataclass(frozen=True)
class CorpusRun:
    """What one ``panchro run`` over the corpus did."""

    root: Path
    dest: Path
    result: Result
    rows: dict[str, list[Row]]
    originals: dict[str, str]
    collection_status: str


def _snapshot(root: Path) -> dict[str, str]:
    """sha256 of every regular file below ``root``, not following links."""
    digests = {}
    for folder, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if os.path.isfile(path) and not os.path.islink(path):
                with open(path, "rb") as file:
                    digests[os.path.relpath(path, root)] = hashlib.sha256(file.read()).hexdigest()
    return digests


def _query(dest: Path, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(f"sqlite:///{dest / '.panchro' / 'catalog.sqlite3'}")
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _rows(root: Path, dest: Path) -> dict[str, list[Row]]:
    rows: dict[str, list[Row]] = {}
    sql = "SELECT source_uri, status, last_error, output_uri, failure_code FROM images"
    for source_uri, status, reason, output_uri, code in _query(dest, sql):
        path = os.path.relpath(parse_uri(str(source_uri)).key, root)
        output = Path(parse_uri(str(output_uri)).key)
        rows.setdefault(path, []).append(
            Row(
                path,
                str(status),
                None if reason is None else str(reason),
                output,
                None if code is None else str(code),
            )
        )
    return rows


@pytest.fixture
def _embedded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """The environment of an embedded run on the CPU, for one test."""
    with _environment(monkeypatch, tmp_path):
        yield


@contextmanager
def _environment(env: pytest.MonkeyPatch, base: Path) -> Iterator[None]:
    env.delenv("PANCHRO_WEIGHTS", raising=False)
    env.delenv("PANCHRO_DATABASE_URL", raising=False)
    env.setenv("PANCHRO_WEIGHTS_DIR", str(base / "weights"))
    env.setenv("PANCHRO_DEVICE", "cpu")
    env.setenv("PANCHRO_PRECISION", "fp32")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _run(source: Path, dest: Path) -> Result:
    return CliRunner().invoke(
        cli,
        ["run", str(source), "--output", str(dest), "--untrained", "--size", SIZE],
        catch_exceptions=False,
    )


@pytest.fixture(scope="module")
def corpus_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CorpusRun]:
    """The corpus, written once and colorized by one ``panchro run``."""
    base = tmp_path_factory.mktemp("bad-inputs")
    with pytest.MonkeyPatch.context() as env, _environment(env, base):
        root, dest = base / "corpus", base / "colour"
        write_corpus(root, base / "outside")
        originals = _snapshot(root)
        result = _run(root, dest)
        ((status,),) = _query(dest, "SELECT status FROM collections")
        yield CorpusRun(root, dest, result, _rows(root, dest), originals, str(status))


def _by_outcome(outcome: str) -> list[Kind]:
    return [kind for kind in CORPUS if kind.outcome == outcome]


def test_the_corpus_holds_at_least_forty_kinds() -> None:
    assert len({kind.kind for kind in CORPUS}) == len(CORPUS) >= 40


def test_every_file_has_exactly_one_row_or_is_deliberately_ignored(corpus_run: CorpusRun) -> None:
    expected = {os.path.normpath(kind.path) for kind in CORPUS if kind.outcome != IGNORED}
    assert set(corpus_run.rows) == expected
    assert {path: len(rows) for path, rows in corpus_run.rows.items() if len(rows) != 1} == {}
    summary = corpus_run.result.output
    ignored = _by_outcome(IGNORED)
    assert f"ignored   {len(ignored)} not part of the collection" in summary
    for kind in ignored:
        assert all(word in summary for word in kind.words), kind.kind


@pytest.mark.parametrize("kind", _by_outcome(DONE), ids=lambda kind: kind.kind)
def test_each_good_kind_is_colorized_at_its_own_size(corpus_run: CorpusRun, kind: Kind) -> None:
    (row,) = corpus_run.rows[os.path.normpath(kind.path)]
    assert (row.status, row.reason, row.code) == ("done", None, None)
    with (
        PILImage.open(corpus_run.root / kind.path) as original,
        PILImage.open(row.output) as output,
    ):
        # An EXIF-rotated original is written upright: its size as it is shown.
        assert output.size == ImageOps.exif_transpose(original).size
        assert output.mode in ("RGB", "RGBA", "I;16", "RGB;16", "I")


@pytest.mark.parametrize(
    "kind", [k for k in CORPUS if k.outcome not in (DONE, IGNORED)], ids=lambda kind: kind.kind
)
def test_each_bad_kind_is_refused_with_a_reason_that_names_the_problem(
    corpus_run: CorpusRun, kind: Kind
) -> None:
    (row,) = corpus_run.rows[os.path.normpath(kind.path)]
    assert (row.status, row.code) == (kind.outcome, kind.code)
    assert row.reason is not None and "\n" not in row.reason and "Traceback" not in row.reason
    for word in kind.words:
        assert word in row.reason.lower(), (kind.kind, row.reason)
    assert not os.path.lexists(row.output)  # nothing written, not even half


def test_the_run_leaves_originals_untouched_and_no_temporary_files(
    corpus_run: CorpusRun,
) -> None:
    assert _snapshot(corpus_run.root) == corpus_run.originals
    leftovers = [
        name for _, _, files in os.walk(corpus_run.dest) for name in files if name.endswith(".tmp")
    ]
    assert leftovers == []


def test_the_summary_names_the_skipped_files_and_the_collection_is_done(
    corpus_run: CorpusRun,
) -> None:
    summary = corpus_run.result.output
    assert corpus_run.result.exit_code == 1  # some images failed
    skipped = sorted(os.path.normpath(kind.path) for kind in _by_outcome(SKIPPED))
    assert f"skipped   {len(skipped)} files, not colorized:" in summary
    for path in skipped[:10]:
        assert f"\n  {path}: " in summary
    assert f"... and {len(skipped) - 10} more: panchro --database-url" in summary
    assert "list corpus --status skipped" in summary
    assert corpus_run.collection_status == "done"


def test_list_and_status_show_the_skipped_files(corpus_run: CorpusRun) -> None:
    url = f"sqlite:///{corpus_run.dest / '.panchro' / 'catalog.sqlite3'}"
    listed = CliRunner().invoke(
        cli, ["--database-url", url, "list", "corpus", "--status", "skipped", "--format", "csv"]
    )
    assert listed.exit_code == 0, listed.output
    assert "empty file (0 bytes)" in listed.output and "link-out.png" in listed.output
    status = CliRunner().invoke(cli, ["--database-url", url, "status", "corpus"])
    assert status.exit_code == 0, status.output
    assert f"{len(_by_outcome(SKIPPED))} skipped" in status.output
    assert "panchro list corpus --status skipped" in status.output


def test_status_groups_failures_by_code_and_list_filters_by_it(corpus_run: CorpusRun) -> None:
    url = f"sqlite:///{corpus_run.dest / '.panchro' / 'catalog.sqlite3'}"
    truncated = sorted(k.path for k in CORPUS if k.code == "decode.truncated")
    assert len(truncated) == 3  # three files, three different errors, one group

    status = CliRunner().invoke(cli, ["--database-url", url, "status", "corpus", "--json"])
    assert status.exit_code == 0, status.output
    (collection,) = json.loads(status.output)["collections"]
    groups = {group["code"]: group for group in collection["top_failures"]}
    assert groups["decode.truncated"]["count"] == 3
    assert groups["decode.truncated"]["example"]["path"] in truncated
    assert groups["size.too_large"]["count"] == 2
    text = CliRunner().invoke(cli, ["--database-url", url, "status", "corpus"]).output
    assert re.search(r"\n +3  decode\.truncated +The file ends before", text), text

    listed = CliRunner().invoke(
        cli, ["--database-url", url, "list", "corpus", "--code", "decode.truncated"]
    )
    assert listed.exit_code == 0, listed.output
    header, *lines = listed.output.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "CODE"]
    assert len(lines) == len(truncated)
    assert all(line.split()[1:3] == ["failed", "decode.truncated"] for line in lines)
    assert {path for path in truncated for line in lines if f"  {path}  (" in line} == set(
        truncated
    )


def _kinds(*paths: str) -> tuple[Kind, ...]:
    return tuple(kind for kind in CORPUS if kind.path in paths)


@pytest.mark.usefixtures("_embedded")
def test_running_again_changes_nothing_and_a_fixed_file_is_colorized(tmp_path: Path) -> None:
    root, dest = tmp_path / "scans", tmp_path / "colour"
    write_corpus(root, tmp_path / "outside", _kinds("empty.jpg", "notes.png", "dot.png"))
    first = _run(root, dest)
    assert first.exit_code == 0, first.output
    before = _query(dest, "SELECT * FROM images ORDER BY id")

    again = _run(root, dest)

    assert again.exit_code == 0 and "0 colorized" in again.output
    assert "skipped   2 files, not colorized:\n  empty.jpg: empty file" in again.output
    assert _query(dest, "SELECT * FROM images ORDER BY id") == before
    assert _query(dest, "SELECT status FROM collections") == [("done",)]

    shutil.copy(root / "dot.png", root / "empty.jpg")  # the file was fixed: now a PNG
    fixed = _run(root, dest)

    assert fixed.exit_code == 0 and "1 colorized" in fixed.output, fixed.output
    rows = _rows(root, dest)
    assert [(row.status, row.reason) for row in rows["empty.jpg"]] == [("done", None)]
    assert [row.status for row in rows["notes.png"]] == ["skipped"]
    assert len(rows) == 3


@pytest.mark.usefixtures("_embedded")
def test_an_unreadable_file_is_recorded_as_skipped(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads a file whatever its permissions (chmod 000 has no effect)")
    root, dest = tmp_path / "scans", tmp_path / "colour"
    write_corpus(root, tmp_path / "outside", (UNREADABLE,))
    try:
        result = _run(root, dest)
    finally:
        (root / UNREADABLE.path).chmod(0o644)
    assert result.exit_code == 0, result.output
    ((row,),) = _rows(root, dest).values()
    assert row.status == "skipped" and row.reason is not None
    assert all(word in row.reason for word in UNREADABLE.words)
