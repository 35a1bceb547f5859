"""``write_report``: the page's numbers, groups and links, read back from the written HTML.

Real SQLite catalogs and files; S3 through moto's server, whose presigned links are
fetched over HTTP. The browser's view of the page is in test_exports_report_browser.py.
"""

from __future__ import annotations

import os
import urllib.request
from html import escape
from pathlib import Path
from urllib.parse import unquote

import boto3
import pytest
from report_helpers import (
    ParsedReport,
    Row,
    colour_pixels,
    make_collection,
    parse_report,
    report_sessions,
    write_thumbnail_pair,
)
from sqlalchemy.orm import Session, sessionmaker

from exports.report import PER_PAGE, write_report
from storage import StorageOptions
from storage.errors import OutputExists
from storage.s3 import S3Storage
from workers.thumbnails import make_thumbnail, thumbnail_uris

__all__ = ["report_sessions"]

CHECKPOINT = "ab" * 32


def _write(sessions: sessionmaker[Session], path: Path, **options: object) -> ParsedReport:
    written = write_report(sessions, "1920s", path, **options)  # type: ignore[arg-type]
    assert written.path == path and written.size == path.stat().st_size
    return parse_report(path)


def test_the_report_counts_images_by_status_and_groups_failures_by_code(
    report_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    rows = [Row(f"done/{i}.tif") for i in range(5)]
    rows += [Row(f"t/{i}.tif", "failed", "decode.truncated", f"truncated {i}") for i in range(4)]
    rows += [Row("oom.tif", "failed", "oom.floor", "out of memory at 256 px")]
    rows += [Row(f"old/{i}.tif", "failed", None, "from before codes") for i in range(2)]
    rows += [Row("notes.txt", "skipped", None, "not an image"), Row("next.tif", "pending")]
    make_collection(
        report_sessions,
        tmp_path / "scans",
        tmp_path / "colour",
        rows,
        untrained=True,
        model_name="ddcolor_paper_tiny",
        checkpoint_sha256=CHECKPOINT,
        input_size=512,
        precision="fp16",
        upsample="guided",
    )

    page = _write(report_sessions, tmp_path / "report.html")

    assert page.counts == {
        "total": 14,
        "done": 5,
        "failed": 7,
        "skipped": 1,
        "cancelled": 0,
        "running": 0,
        "queued": 0,
        "pending": 1,
    }
    # Largest group first; NULL codes grouped as "unknown"; failed before skipped.
    assert page.codes == ["decode.truncated", "unknown", "oom.floor", "unknown"]
    failures = page.section("failed-groups")
    assert "truncated 0" in failures and "truncated 2" in failures
    assert "truncated 3" not in failures  # three examples per group
    # Each group says what its code means and what to do, from the one vocabulary.
    from catalog.reasons import describe_reason

    truncated = describe_reason("decode.truncated")
    assert escape(truncated.meaning) in failures and escape(truncated.action) in failures
    assert "not an image" in page.section("skipped-groups")
    settings = page.section("settings")
    assert CHECKPOINT in settings and "ddcolor_paper_tiny" in settings and "guided" in settings
    assert "random, untrained: the colours are meaningless" in settings
    assert 'id="untrained"' in page.html
    assert "2026-12-02 22:00:00 UTC" in page.section("times")
    assert [row[1] for row in page.rows] == [row.path for row in rows]
    statuses = page.tables["statuses"]
    assert [statuses[row[2]] for row in page.rows] == [row.status for row in rows]
    codes = page.tables["codes"]
    assert [None if r[3] is None else codes[r[3]] for r in page.rows] == [r.code for r in rows]
    # Outputs are linked for done images only.
    assert [row[6] is not None for row in page.rows] == [row.status == "done" for row in rows]


HOSTILE = [
    "</script><script>alert(1)</script>.png",
    "<img src=x onerror=alert(1)>.png",
    "javascript:alert(1).png",
    "a &amp; b \"q\" 'x' \u2028 é.png",
]


def test_hostile_file_names_and_errors_are_text_in_the_page_never_markup(
    report_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    output = tmp_path / "colour"
    rows = [Row(name) for name in HOSTILE]
    rows.append(Row("<b>x</b>.png", "failed", "<i>code</i>", "<script>alert(2)</script>"))
    make_collection(report_sessions, tmp_path / "scans", output, rows, name="1920s")

    page = _write(report_sessions, tmp_path / "report.html")

    assert page.tags.count("script") == 3  # the rows, the tables, the page's own script
    assert "img" not in page.tags and "i" not in page.tags
    assert page.tags.count("b") == len(page.counts)  # the count cards
    assert "<script>alert" not in page.html and "<img src=x" not in page.html
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page.section("failed-groups")
    assert [row[1] for row in page.rows] == [row.path for row in rows]
    links = [page.link(row[6]) for row in page.rows[: len(HOSTILE)]]
    assert all(link is not None and ":" not in link and "<" not in link for link in links)
    assert [unquote(str(link)) for link in links] == [f"colour/{name}" for name in HOSTILE]


def test_local_links_lead_from_the_report_folder_to_the_thumbnails_and_outputs(
    report_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    output = tmp_path / "colour"
    thumbs = {
        name: write_thumbnail_pair(output, str(output / name), seed)
        for seed, name in enumerate(["a.tif", "album 2/b #1?.tif"])
    }
    make_collection(
        report_sessions, tmp_path / "scans", output, [Row(n) for n in thumbs], thumbnails=thumbs
    )
    folder = tmp_path / "reports" / "daily"
    folder.mkdir(parents=True)

    page = _write(report_sessions, folder / "1920s.html")

    for row in page.rows:
        expected = (*thumbs[row[1]], str(output / row[1]))
        found = tuple(
            os.path.normpath(folder / unquote(str(page.link(entry)))) for entry in row[4:7]
        )
        assert found == expected
        assert all(Path(path).is_file() for path in found[:2])


def test_a_report_of_ten_thousand_images_is_small_json_drawn_a_page_at_a_time(
    report_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    output = tmp_path / "colour"
    rows = [Row(f"box {i // 1000:02d}/scan-{i:05d}.tif") for i in range(9_000)]
    rows += [Row(f"bad/{i:04d}.tif", "failed", f"decode.kind{i % 5}", "bad") for i in range(1_000)]
    keys = [f"{output}/.panchro/thumbs/{i % 256:02x}/{i:032x}" for i in range(9_000)]
    thumbs = {
        row.path: (f"{key}.source.jpg", f"{key}.output.jpg")
        for key, row in zip(keys, rows, strict=False)
    }
    make_collection(report_sessions, tmp_path / "scans", output, rows, thumbnails=thumbs)

    written = write_report(report_sessions, "1920s", tmp_path / "report.html")
    page = parse_report(written.path)

    assert written.images == len(page.rows) == 10_000
    assert page.counts["done"] == 9_000 and page.counts["failed"] == 1_000
    assert sorted(page.codes) == [f"decode.kind{i}" for i in range(5)]
    assert page.tables["per_page"] == PER_PAGE == 100
    # No markup per image: the page's script draws 100 rows at a time from the JSON.
    assert "img" not in page.tags and page.html.count("<figure") == 0
    assert written.size < 2_000_000


def test_a_file_that_is_not_a_report_is_never_replaced_but_an_old_report_is(
    report_sessions: sessionmaker[Session], tmp_path: Path
) -> None:
    make_collection(report_sessions, tmp_path / "scans", tmp_path / "colour", [Row("a.tif")])
    precious = tmp_path / "notes.html"
    precious.write_text("<html>the archivist's notes</html>")
    report = tmp_path / "report.html"
    write_report(report_sessions, "1920s", report)
    report.write_text(report.read_text().replace("Collection 1920s", "stale"))

    with pytest.raises(OutputExists, match="is not a panchro report"):
        write_report(report_sessions, "1920s", precious)
    write_report(report_sessions, "1920s", report)

    assert precious.read_text() == "<html>the archivist's notes</html>"
    assert "Collection 1920s" in report.read_text()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []


def test_without_credentials_s3_objects_are_not_linked_and_the_page_says_why(
    report_sessions: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    root = "s3://archive/colour"
    thumbs = {"a.tif": thumbnail_uris(root, f"{root}/a.tif")}
    make_collection(report_sessions, tmp_path / "scans", root, [Row("a.tif")], thumbnails=thumbs)

    written = write_report(report_sessions, "1920s", tmp_path / "report.html")
    page = parse_report(written.path)

    assert written.links_expire_at is None
    assert page.rows[0][4:7] == [None, None, None]
    assert "S3 objects are not linked: cannot sign a link to s3://archive/colour/" in page.html
    assert "no usable AWS credentials" in page.html
    assert page.counts["done"] == 1


@pytest.mark.s3
def test_s3_thumbnails_and_outputs_are_linked_by_presigned_urls_that_open(
    report_sessions: sessionmaker[Session],
    tmp_path: Path,
    s3_bucket: str,
    s3_endpoint_url: str,
) -> None:
    options = StorageOptions(endpoint_url=s3_endpoint_url, addressing_style="path")
    store = S3Storage(options)
    root = f"s3://{s3_bucket}/colour"
    names = ["a.tif", "album/b é.tif"]
    thumbs: dict[str, tuple[str, str]] = {}
    for seed, name in enumerate(names):
        pair = thumbnail_uris(root, f"{root}/{name}")
        for uri in pair:
            store.write(uri, make_thumbnail(colour_pixels(seed)), content_type="image/jpeg")
        store.write(f"{root}/{name}", f"output {seed}".encode())
        thumbs[name] = pair
    rows = [Row(name) for name in names]
    make_collection(report_sessions, tmp_path / "scans", root, rows, thumbnails=thumbs)

    page = _write(report_sessions, tmp_path / "report.html", storage_options=options, expires_s=600)

    raw = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    for row in page.rows:
        for entry, uri in zip(row[4:7], (*thumbs[row[1]], f"{root}/{row[1]}"), strict=True):
            url = str(page.link(entry))
            assert "X-Amz-Algorithm=AWS4-HMAC-SHA256" in url and "X-Amz-Expires=600" in url
            with urllib.request.urlopen(url, timeout=30) as response:
                body = response.read()
            key = uri.removeprefix(f"s3://{s3_bucket}/")
            assert body == raw.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
    assert len(page.tables["queries"]) <= 2  # one per second of signing
    assert "Links to S3 are presigned and stop working at" in page.html
