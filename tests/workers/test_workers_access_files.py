"""Access copies (``--derivative``) and JSON sidecars (``--sidecars``) written by the workers.

Real catalogs (SQLite, and PostgreSQL for the main case), ``LocalStorage`` on ``tmp_path``,
moto's S3 server, the colorize task called as a plain function, and the instant stand-in
network: what is checked is the files beside the master and their catalog rows.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms, PngImagePlugin
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session, sessionmaker
from workers_helpers import (
    WORKER,
    add_collection,
    process_locally,
    read_image,
    sha256_of,
    stub_colorizer,
)

from catalog import (
    Derivative,
    Image,
    ImageStatus,
    ScannedImage,
    create_or_get_collection,
    queue_pending,
    register_images,
    transaction,
)
from storage import LocalStorage, StorageOptions
from storage.codecs.jpeg import estimate_quality
from storage.stamp import UNTRAINED_SOURCE_TYPE
from workers.process import ProcessStatus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

#: What a collection asks for in most tests: a small copy, one larger than the scan, a sidecar.
ASKED = {"derivatives": ["jpeg:64", "jpeg:3000"], "sidecars": True}
#: The archive's identifier in the scan's XMP, which every copy must carry.
IDENTIFIER = "box1-p001"
ARTIST = "A. Photographer"


def write_scan(path: Path, size: tuple[int, int] = (100, 80)) -> Path:
    """An 8-bit grayscale PNG scan at 300 dpi with EXIF (Artist) and XMP (an identifier)."""
    width, height = size
    ramp = np.linspace(0, 255, width * height).reshape(height, width).astype(np.uint8)
    exif = PILImage.Exif()
    exif[0x013B] = ARTIST
    info = PngImagePlugin.PngInfo()
    info.add_itxt(
        "XML:com.adobe.xmp",
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
        'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
        'rdf:about="" xmlns:dc="http://purl.org/dc/elements/1.1/">'
        f"<dc:identifier>{IDENTIFIER}</dc:identifier></rdf:Description></rdf:RDF></x:xmpmeta>",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.fromarray(ramp, "L").save(path, dpi=(300, 300), exif=exif.tobytes(), pnginfo=info)
    return path


def _derivatives(sessions: sessionmaker[Session], image_id: int) -> dict[str, Derivative]:
    with sessions.begin() as db:
        rows = db.scalars(select(Derivative).where(Derivative.image_id == image_id)).all()
        db.expunge_all()
    return {Path(row.uri).name: row for row in rows}


def _requeue(sessions: sessionmaker[Session], image_id: int, **options: Any) -> None:
    """Send a done image back to the queue (as a changed original does), new options too."""
    with sessions.begin() as db:
        db.execute(update(Image).where(Image.id == image_id).values(status=ImageStatus.QUEUED))
        if options:
            image = db.get(Image, image_id)
            assert image is not None
            image.collection.options = options


def _xmp(jpeg: PILImage.Image) -> str:
    xmp = jpeg.info.get("xmp")
    assert isinstance(xmp, bytes)
    return xmp.decode()


def _leftovers(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


def test_access_copies_and_sidecar_are_written_beside_the_master_and_recorded(
    catalog_sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_scan(source / "a.png")
    ids = add_collection(catalog_sessions, source, output, ["a.png"], options=ASKED)

    assert process_locally(catalog_sessions, ids["a.png"]).status is ProcessStatus.DONE

    image = read_image(catalog_sessions, ids["a.png"])
    master = output / "a.png"
    assert image.status is ImageStatus.DONE and sha256_of(master) == image.output_sha256
    rows = _derivatives(catalog_sessions, ids["a.png"])
    assert set(rows) == {"a.png.64.jpg", "a.png.3000.jpg"}
    for name, (edge, width, height, dpi) in {
        "a.png.64.jpg": (64, 64, 51, 192),  # 100x80 at 300 dpi, shrunk by 0.64
        "a.png.3000.jpg": (3000, 100, 80, 300),  # never enlarged
    }.items():
        path, row = output / name, rows[name]
        assert (row.kind, row.long_edge, row.uri) == ("jpeg", edge, str(path))
        assert (row.sha256, row.size) == (sha256_of(path), path.stat().st_size)
        with PILImage.open(path) as copy:
            assert copy.format == "JPEG" and copy.mode == "RGB"
            assert copy.size == (row.width, row.height) == (width, height)
            assert copy.info["dpi"] == (dpi, dpi)
            assert estimate_quality(copy.quantization) == 90
            profile = ImageCms.ImageCmsProfile(io.BytesIO(copy.info["icc_profile"]))
            assert "sRGB" in ImageCms.getProfileDescription(profile)
            assert copy.getexif()[0x013B] == ARTIST
            xmp = _xmp(copy)
            assert "UNTRAINED" in str(copy.info.get("comment"))
        assert UNTRAINED_SOURCE_TYPE in xmp and IDENTIFIER in xmp and "UNTRAINED" in xmp
        assert f"<panchro:DerivedFromSHA256>{image.output_sha256}<" in xmp

    assert image.sidecar_uri == str(output / "a.png.json")
    sidecar = json.loads((output / "a.png.json").read_text())
    assert sidecar["source"]["sha256"] == image.source_sha256 == sha256_of(source / "a.png")
    assert sidecar["output"] == {
        "uri": str(master),
        "sha256": image.output_sha256,
        "size": image.output_size,
    }
    assert sidecar["model"] == {
        "name": image.model_name,
        "checkpoint_sha256": image.checkpoint_sha256,
        "untrained": True,
    }
    processing = sidecar["processing"]
    assert processing["input_size"] == image.input_size == 256
    assert processing["sizes_tried"] == image.sizes_tried
    assert (processing["precision"], processing["upsample"]) == (image.precision, "guided")
    assert (processing["device"], processing["host"]) == (image.device, image.worker_host)
    assert sidecar["times"]["started_at"].startswith(image.started_at.isoformat()[:19])
    assert sidecar["untrained"] is True and sidecar["panchro_version"]
    assert sidecar["ai_generated"]["digital_source_type"] == UNTRAINED_SOURCE_TYPE
    assert {(d["uri"], d["sha256"]) for d in sidecar["derivatives"]} == {
        (row.uri, row.sha256) for row in rows.values()
    }
    assert sorted(p.name for p in output.iterdir()) == [
        ".panchro",  # the thumbnails for reports
        "a.png",
        "a.png.3000.jpg",
        "a.png.64.jpg",
        "a.png.json",
    ]


def test_sources_sharing_a_stem_get_their_own_copies_and_no_copy_takes_an_output(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    with PILImage.open(write_scan(source / "a.png")) as scan:
        scan.save(source / "a.tif", format="TIFF")
    write_scan(source / "b.png")
    # A JPEG original whose name is b.png's copy: its master takes that name.
    with PILImage.open(source / "b.png") as scan:
        scan.save(source / "b.png.64.jpg", format="JPEG")
    names = ["a.tif", "a.png", "b.png", "b.png.64.jpg"]
    ids = add_collection(sessions, source, output, names, options={"derivatives": ["jpeg:64"]})

    outcomes = {name: process_locally(sessions, ids[name]) for name in names}

    assert {n: o.status for n, o in outcomes.items()} == {
        "a.tif": ProcessStatus.DONE,
        "a.png": ProcessStatus.DONE,
        "b.png": ProcessStatus.FAILED,
        "b.png.64.jpg": ProcessStatus.DONE,
    }
    assert "the access copy jpeg:64 would go to" in str(outcomes["b.png"].reason)
    assert "the output of another image" in str(outcomes["b.png"].reason)
    first, second = _derivatives(sessions, ids["a.tif"]), _derivatives(sessions, ids["a.png"])
    assert set(first) == {"a.tif.64.jpg"} and set(second) == {"a.png.64.jpg"}
    assert first["a.tif.64.jpg"].sha256 == sha256_of(output / "a.tif.64.jpg")
    assert second["a.png.64.jpg"].sha256 == sha256_of(output / "a.png.64.jpg")
    other = read_image(sessions, ids["b.png.64.jpg"])
    assert sha256_of(output / "b.png.64.jpg") == other.output_sha256
    assert _derivatives(sessions, ids["b.png"]) == {}


def test_a_foreign_file_where_a_copy_goes_is_left_untouched_and_the_image_fails(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_scan(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"], options=ASKED)
    foreign = output / "a.png.64.jpg"
    foreign.parent.mkdir(parents=True)
    PILImage.new("RGB", (8, 8)).save(foreign, format="JPEG")
    before = (foreign.read_bytes(), foreign.stat().st_mtime_ns)

    outcome = process_locally(sessions, ids["a.png"])

    assert outcome.status is ProcessStatus.FAILED
    row = read_image(sessions, ids["a.png"])
    assert row.status is ImageStatus.FAILED and row.last_error
    assert str(foreign) in row.last_error
    assert "panchro did not write for this image; left untouched" in row.last_error
    assert (foreign.read_bytes(), foreign.stat().st_mtime_ns) == before
    assert not (output / "a.png.json").exists()  # the sidecar comes last
    assert _leftovers(output) == [] and _derivatives(sessions, ids["a.png"]) == {}


def test_a_redone_image_replaces_its_own_copies_even_those_never_recorded(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_scan(source / "a.png")
    ids = add_collection(sessions, source, output, ["a.png"], options=ASKED)
    assert process_locally(sessions, ids["a.png"]).status is ProcessStatus.DONE
    copy, sidecar = output / "a.png.64.jpg", output / "a.png.json"
    inodes = (copy.stat().st_ino, sidecar.stat().st_ino)
    # A worker killed after writing them, before the catalog recorded them.
    with sessions.begin() as db:
        db.execute(text("DELETE FROM derivatives"))
        db.execute(update(Image).values(sidecar_uri=None))
    _requeue(sessions, ids["a.png"])

    assert process_locally(sessions, ids["a.png"]).status is ProcessStatus.DONE

    assert (copy.stat().st_ino, sidecar.stat().st_ino) != inodes  # replaced, not kept
    image = read_image(sessions, ids["a.png"])
    assert _derivatives(sessions, ids["a.png"])["a.png.64.jpg"].sha256 == sha256_of(copy)
    assert json.loads(sidecar.read_text())["output"]["sha256"] == image.output_sha256
    assert image.sidecar_uri == str(sidecar)

    # Asked for less now: the rows follow; the earlier files stay where they are.
    _requeue(sessions, ids["a.png"], derivatives=["jpeg:32"])
    assert process_locally(sessions, ids["a.png"]).status is ProcessStatus.DONE
    assert set(_derivatives(sessions, ids["a.png"])) == {"a.png.32.jpg"}
    assert read_image(sessions, ids["a.png"]).sidecar_uri is None
    assert copy.exists() and sidecar.exists() and _leftovers(output) == []


def test_unusable_options_fail_the_image_with_the_form_to_use(
    sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    write_scan(source / "a.png")
    options = {"derivatives": ["png:100"]}
    ids = add_collection(sessions, source, output, ["a.png"], options=options)

    outcome = process_locally(sessions, ids["a.png"])

    assert outcome.status is ProcessStatus.FAILED
    reason = read_image(sessions, ids["a.png"]).last_error or ""
    assert "'png:100' is not a derivative; give jpeg:LONG_EDGE" in reason


@pytest.mark.s3
def test_access_copy_and_sidecar_are_written_beside_an_s3_master(
    sessions: sessionmaker[Session], source: Path, s3_bucket: str, s3_endpoint_url: str
) -> None:
    import boto3

    from storage.s3 import S3Storage

    write_scan(source / "a.png")
    root = f"s3://{s3_bucket}/colour"
    with transaction(sessions) as db:
        collection, _ = create_or_get_collection(
            db, "scans", str(source), root, input_size=256, options=ASKED
        )
        register_images(
            db,
            collection.id,
            [ScannedImage(str(source / "a.png"), "a.png", f"{root}/a.png", 1, "x", "etag")],
        )
        queue_pending(db, collection.id, 1)
    ids = {"a.png": 1}
    s3 = S3Storage(StorageOptions(endpoint_url=s3_endpoint_url, addressing_style="path"))

    def storage_for(uri: str) -> Any:
        return s3 if uri.startswith("s3://") else LocalStorage()

    assert process_locally(sessions, ids["a.png"], storage_for=storage_for).status.value == "done"
    _requeue(sessions, ids["a.png"])  # done again, over its own copies
    assert process_locally(sessions, ids["a.png"], storage_for=storage_for).status.value == "done"

    raw = boto3.client("s3", endpoint_url=s3_endpoint_url, region_name="us-east-1")
    keys = sorted(o["Key"] for o in raw.list_objects_v2(Bucket=s3_bucket)["Contents"])
    keys = [key for key in keys if not key.startswith("colour/.panchro/")]  # thumbnails
    assert keys == [f"colour/a.png{end}" for end in ("", ".3000.jpg", ".64.jpg", ".json")]
    rows = _derivatives(sessions, ids["a.png"])
    body = raw.get_object(Bucket=s3_bucket, Key="colour/a.png.64.jpg")
    assert body["ContentType"] == "image/jpeg"
    data = body["Body"].read()
    assert rows["a.png.64.jpg"].sha256 == hashlib.sha256(data).hexdigest()
    with PILImage.open(io.BytesIO(data)) as copy:
        assert copy.size == (64, 51)
    image = read_image(sessions, ids["a.png"])
    assert image.sidecar_uri == f"{root}/a.png.json"
    sidecar = json.loads(raw.get_object(Bucket=s3_bucket, Key="colour/a.png.json")["Body"].read())
    assert sidecar["output"]["sha256"] == image.output_sha256
    assert os.path.basename(sidecar["derivatives"][0]["uri"]) in rows


def test_submit_options_reach_the_colorize_task_which_writes_the_copies(
    catalog_url: str, sessions: sessionmaker[Session], source: Path, output: Path
) -> None:
    from click.testing import CliRunner

    from catalog import get_collection
    from panchro.cli import cli
    from workers.app import create_app
    from workers.runtime import WorkerConfig, WorkerRuntime
    from workers.tasks import register_tasks

    write_scan(source / "a.png")
    asked = ["--derivative", "jpeg:32", "--derivative", "JPEG:32", "--sidecars"]
    submitted = CliRunner().invoke(
        cli,
        ["--database-url", catalog_url, "submit", str(source), "--collection", "c"]
        + ["--output", str(output), "--untrained", "--size", "256", "--no-dispatch", *asked],
    )
    assert submitted.exit_code == 0, submitted.output
    with transaction(sessions) as db:
        collection = get_collection(db, "c")
        assert collection.options == {"derivatives": ["jpeg:32"], "sidecars": True}
        [image_id] = queue_pending(db, collection.id, 10)
    runtime = WorkerRuntime(
        WorkerConfig(database_url=catalog_url, untrained=True, device="cpu", node_name=WORKER),
        colorizer_factory=lambda _: stub_colorizer(),
    )
    app = create_app(broker_url="memory://")
    task = register_tasks(app, runtime)
    task.push_request(id="m-1", hostname=WORKER)
    try:
        task.run(image_id)
    finally:
        task.pop_request()
        app.close()
        runtime.close()

    image = read_image(sessions, image_id)
    assert image.status is ImageStatus.DONE
    rows = _derivatives(sessions, image_id)
    assert rows["a.png.32.jpg"].sha256 == sha256_of(output / "a.png.32.jpg")
    sidecar = json.loads((output / "a.png.json").read_text())
    assert sidecar["output"]["sha256"] == image.output_sha256
    assert sidecar["processing"]["host"] == WORKER


def test_colorize_writes_copies_beside_its_outputs_replacing_only_its_own(
    tmp_path: Path,
) -> None:
    from panchro.commands.colorize import _run, plan_jobs
    from workers.access_options import parse_derivative_specs

    def write_gray_png(path: Path, size: tuple[int, int]) -> None:
        write_scan(path, size)

    scans, dest = tmp_path / "scans", tmp_path / "colour"
    for name in ("a.png", "b.png", "c.png"):
        write_gray_png(scans / name, size=(48, 40))
    with PILImage.open(scans / "b.png") as image:  # an original named like b.png's copy
        image.save(scans / "b.png.24.jpg", format="JPEG")
    stranger = dest / "c.png.24.jpg"
    stranger.parent.mkdir()
    stranger.write_bytes(b"somebody else's")
    specs = parse_derivative_specs(["jpeg:24"])
    colorizer = stub_colorizer()

    def colorize(*, overwrite: bool) -> dict[str, str]:
        jobs = plan_jobs(scans, dest, None)
        outcomes = _run(
            colorizer,
            jobs,
            storage=LocalStorage(),
            size=None,
            overwrite=overwrite,
            untrained=True,
            derivatives=specs,
        )
        return {outcome.source.name: f"{outcome.status} {outcome.detail}" for outcome in outcomes}

    outcomes = colorize(overwrite=False)
    assert outcomes["a.png"].startswith("done") and outcomes["b.png.24.jpg"].startswith("done")
    assert "an original or another output of this run" in outcomes["b.png"]
    assert "panchro did not write for this image; left untouched" in outcomes["c.png"]
    assert stranger.read_bytes() == b"somebody else's"
    copy = dest / "a.png.24.jpg"
    with PILImage.open(copy) as image:
        assert image.size == (24, 20)
        assert f">{sha256_of(dest / 'a.png')}<" in image.info["xmp"].decode()
    before = copy.stat().st_ino

    # Again with --overwrite: its own copy is replaced; a stranger's file is not.
    outcomes = colorize(overwrite=True)
    assert outcomes["a.png"].startswith("done") and outcomes["c.png"].startswith("failed")
    assert copy.stat().st_ino != before
    with PILImage.open(copy) as image:
        assert f">{sha256_of(dest / 'a.png')}<" in image.info["xmp"].decode()
    assert stranger.read_bytes() == b"somebody else's"
