"""`panchro run` and `panchro weights`: the embedded default, end to end on real files."""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image as PILImage
from report_checks import check_run_thumbnails_and_report
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from ddcolor.build import build_ddcolor
from ddcolor.checkpoints import sha256_file
from panchro.cli import cli

#: The sample collection shipped with the project.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Smallest input size: keeps the model's forward quick on the CPU.
SIZE = "256"


pytestmark = pytest.mark.usefixtures("local_model_env")


def run(*args: str) -> Result:
    """Invoke the CLI in-process."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def catalog_rows(dest: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of a query on the run's SQLite catalog."""
    engine = create_engine(f"sqlite:///{dest / '.panchro' / 'catalog.sqlite3'}")
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _done_so_far(dest: Path) -> int:
    """Images done in a run's catalog; 0 while the run is still creating its schema."""
    try:
        return int(
            str(catalog_rows(dest, "SELECT count(*) FROM images WHERE status = 'done'")[0][0])
        )
    except OperationalError:
        return 0


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def make_collection(root: Path, copies: int = 1) -> Path:
    """A folder of sample images (each example ``copies`` times)."""
    root.mkdir(parents=True)
    for index in range(copies):
        for name in ("camera.jpg", "coins.png", "coins-16bit.tif", "brick-vignette.png"):
            shutil.copy(EXAMPLES / name, root / f"{index}-{name}")
    return root


def test_run_colorizes_a_folder_and_records_provenance(tmp_path: Path) -> None:
    source = make_collection(tmp_path / "scans")
    dest = tmp_path / "colour"
    result = run("run", str(source), "--output", str(dest), "--untrained", "--size", SIZE)
    assert result.exit_code == 0, result.output
    assert "4 colorized, 0 failed" in result.output
    for original in source.iterdir():
        with PILImage.open(original) as a, PILImage.open(dest / original.name) as b:
            assert a.size == b.size
    rows = catalog_rows(
        dest,
        "SELECT status, input_size, precision, checkpoint_sha256, source_sha256, output_sha256,"
        " worker_host, device FROM images",
    )
    assert len(rows) == 4
    for status, size, precision, checkpoint, src_sha, out_sha, host, device in rows:
        assert (status, size, precision) == ("done", 256, "fp32")
        assert checkpoint == "none (untrained)"
        assert src_sha and out_sha and host and device
    untrained = catalog_rows(dest, "SELECT untrained FROM collections")
    assert untrained == [(1,)]
    check_run_thumbnails_and_report(dest, "scans", run, done=4)


def test_run_again_resumes_without_redoing_finished_images(tmp_path: Path) -> None:
    source = make_collection(tmp_path / "scans")
    dest = tmp_path / "colour"
    assert run("run", str(source), "-o", str(dest), "--untrained", "--size", SIZE).exit_code == 0
    stamps = {path.name: path.stat().st_mtime_ns for path in dest.iterdir() if path.is_file()}
    again = run("run", str(source), "-o", str(dest), "--untrained", "--size", SIZE)
    assert again.exit_code == 0
    assert "0 colorized" in again.output
    assert {p.name: p.stat().st_mtime_ns for p in dest.iterdir() if p.is_file()} == stamps
    assert catalog_rows(dest, "SELECT count(*) FROM attempts") == [(4,)]


def test_run_fails_a_corrupt_image_with_a_reason_and_finishes_the_rest(tmp_path: Path) -> None:
    source = make_collection(tmp_path / "scans")
    data = (EXAMPLES / "camera.jpg").read_bytes()
    (source / "torn.jpg").write_bytes(data[: len(data) // 4])
    dest = tmp_path / "colour"
    result = run("run", str(source), "-o", str(dest), "--untrained", "--size", SIZE)
    assert result.exit_code == 1
    assert "4 colorized, 1 failed" in result.output
    (reason,) = catalog_rows(dest, "SELECT last_error FROM images WHERE status = 'failed'")[0]
    assert "torn.jpg" in str(reason)
    assert not (dest / "torn.jpg").exists()
    assert (source / "torn.jpg").read_bytes() == data[: len(data) // 4]


def test_run_without_weights_says_how_to_get_them(tmp_path: Path) -> None:
    source = make_collection(tmp_path / "scans")
    result = run("run", str(source), "-o", str(tmp_path / "colour"))
    assert result.exit_code == 1
    assert "panchro weights fetch" in result.output and "--untrained" in result.output
    assert not (tmp_path / "colour").exists()


def test_ctrl_c_stops_cleanly_and_the_same_command_resumes(tmp_path: Path) -> None:
    source = make_collection(tmp_path / "scans", copies=2)
    dest = tmp_path / "colour"
    argv = [
        str(Path(sys.executable).with_name("panchro")),
        "run",
        str(source),
        "-o",
        str(dest),
        "--untrained",
        "--size",
        SIZE,
    ]
    env = {
        **os.environ,
        "PANCHRO_WEIGHTS_DIR": str(tmp_path / "weights"),
        "PANCHRO_DEVICE": "cpu",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        # Ctrl-C must reach the run even when the tests run as a background job, which
        # starts with SIGINT ignored; Python then installs its own handler.
        preexec_fn=_default_sigint,
    )
    catalog = dest / ".panchro" / "catalog.sqlite3"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if catalog.exists() and _done_so_far(dest) >= 2:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the run did not finish two images in time")
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, output
    assert "run the same command again to resume" in output
    assert "Traceback" not in output
    left = dict(catalog_rows(dest, "SELECT status, count(*) FROM images GROUP BY status"))
    assert "running" not in left and "queued" not in left
    finished = {p.name: p.stat().st_mtime_ns for p in dest.iterdir() if p.is_file()}
    assert len(finished) == left["done"] < 8

    resumed = run("run", str(source), "-o", str(dest), "--untrained", "--size", SIZE)
    assert resumed.exit_code == 0, resumed.output
    assert f"{8 - len(finished)} colorized" in resumed.output
    assert dict(catalog_rows(dest, "SELECT status, count(*) FROM images GROUP BY status")) == {
        "done": 8
    }
    for name, stamp in finished.items():
        assert (dest / name).stat().st_mtime_ns == stamp


# --------------------------------------------------------------------------- weights


class _Publisher(http.server.BaseHTTPRequestHandler):
    """Serves ``/<name>/resolve/main/pytorch_model.bin`` from a dict; may cut it short."""

    files: dict[str, bytes] = {}
    truncate = False

    def do_GET(self) -> None:  # noqa: N802 (the handler's API)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.truncate else body)

    def log_message(self, *args: object) -> None:
        """Keep the test output quiet."""


@pytest.fixture(scope="module")
def published_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a tiny checkpoint file, built once for the module's publishers."""
    checkpoint = tmp_path_factory.mktemp("published") / "published.bin"
    torch.manual_seed(3)
    torch.save(build_ddcolor("ddcolor_paper_tiny").state_dict(), checkpoint)
    return checkpoint.read_bytes()


@pytest.fixture
def publisher(published_checkpoint: bytes) -> Iterator[tuple[str, type[_Publisher]]]:
    """A loopback HTTP server standing in for the checkpoint publisher."""
    handler = type(
        "Handler",
        (_Publisher,),
        {
            "files": {
                "/ddcolor_paper_tiny/resolve/main/pytorch_model.bin": published_checkpoint,
                "/ddcolor_paper/resolve/main/pytorch_model.bin": b"<html>not found</html>",
            },
            "truncate": False,
        },
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def test_weights_fetch_verifies_records_sha256_and_run_uses_it(
    tmp_path: Path, publisher: tuple[str, type[_Publisher]]
) -> None:
    base_url, _ = publisher
    fetched = run("weights", "fetch", "ddcolor_paper_tiny", "--base-url", base_url)
    assert fetched.exit_code == 0, fetched.output
    path = tmp_path / "weights" / "ddcolor_paper_tiny.bin"
    assert sha256_file(path) in fetched.output
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []

    source = make_collection(tmp_path / "scans")
    dest = tmp_path / "colour"
    result = run(
        "run", str(source), "-o", str(dest), "--model", "ddcolor_paper_tiny", "--size", SIZE
    )
    assert result.exit_code == 0, result.output
    shas = {row[0] for row in catalog_rows(dest, "SELECT checkpoint_sha256 FROM images")}
    assert shas == {sha256_file(path)}


def test_weights_fetch_leaves_nothing_behind_when_cut_short_or_wrong(
    tmp_path: Path, publisher: tuple[str, type[_Publisher]]
) -> None:
    base_url, handler = publisher
    wrong = run("weights", "fetch", "ddcolor_paper", "--base-url", base_url)
    assert wrong.exit_code == 1
    assert "not a usable ddcolor_paper checkpoint" in wrong.output
    handler.truncate = True
    cut = run("weights", "fetch", "ddcolor_paper_tiny", "--base-url", base_url)
    assert cut.exit_code == 1
    assert "cut short" in cut.output
    assert list((tmp_path / "weights").iterdir()) == []


def test_weights_fetch_offline_says_what_to_do_instead(tmp_path: Path) -> None:
    result = run("weights", "fetch", "ddcolor_modelscope", "--base-url", "http://127.0.0.1:9")
    assert result.exit_code == 1
    assert "--weights" in result.output and "Traceback" not in result.output
