"""Tests of scheduler.outputs: output names, destination checks, collisions."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scheduler import (
    InvalidDestination,
    OutputCollision,
    check_destination,
    is_case_insensitive,
    output_relative,
    plan_outputs,
)
from storage.scan_report import ScannedObject
from storage.uri import parse_uri


def _object(relative: str, image_format: str, source: str = "s3://scans/box") -> ScannedObject:
    return ScannedObject(
        uri=parse_uri(f"{source}/{relative}"),
        relative=relative,
        size=10,
        checksum="etag-" + relative,
        checksum_kind="etag",
        last_modified=datetime(2024, 1, 1, tzinfo=UTC),
        format=image_format,
        sniffed=False,
    )


@pytest.mark.parametrize(
    ("relative", "image_format", "expected"),
    [
        ("a.tif", "tiff", "a.tif"),
        ("a.tiff", "tiff", "a.tiff"),
        ("x.PNG", "PNG", "x.PNG"),
        ("album 3/p.jpeg", "JPEG", "album 3/p.jpeg"),
        ("m.webp", "webp", "m.webp"),
    ],
)
def test_output_relative_keeps_the_name_when_the_format_family_is_kept(
    relative: str, image_format: str, expected: str
) -> None:
    assert output_relative(relative, image_format) == expected


@pytest.mark.parametrize(
    ("relative", "image_format", "expected"),
    [
        ("a.bmp", "bmp", "a.bmp.png"),
        ("masters/m.jp2", "jpeg2000", "masters/m.jp2.tif"),
        ("scan0001", "JPEG", "scan0001.jpg"),
        ("photo.png", "JPEG", "photo.png.jpg"),
        ("notes.dat", "TIFF", "notes.dat.tif"),
        (".tif", "TIFF", ".tif.tif"),
    ],
)
def test_output_relative_appends_the_output_extension_when_the_format_changes(
    relative: str, image_format: str, expected: str
) -> None:
    assert output_relative(relative, image_format) == expected


def test_output_relative_follows_a_requested_output_format() -> None:
    assert output_relative("a.tif", "tiff", "png") == "a.tif.png"
    assert output_relative("b.png", "png", "png") == "b.png"


def test_output_relative_gives_same_stem_sources_distinct_outputs() -> None:
    sources = [("a.tif", "tiff"), ("a.tiff", "tiff"), ("a.jp2", "jpeg2000"), ("a.bmp", "bmp")]
    sources += [("x.png", "png"), ("x.PNG", "png"), ("a.png", "png"), ("a.jpg", "jpeg")]
    outputs = [output_relative(relative, image_format) for relative, image_format in sources]
    assert len(set(outputs)) == len(outputs)


def test_output_relative_refuses_an_unwritable_requested_format() -> None:
    with pytest.raises(ValueError):
        output_relative("a.tif", "tiff", "bmp")


def test_check_destination_refuses_the_source_itself(tmp_path: Path) -> None:
    with pytest.raises(InvalidDestination, match="is the source"):
        check_destination(tmp_path / "scans", tmp_path / "scans")


def test_check_destination_refuses_a_folder_inside_the_source(tmp_path: Path) -> None:
    with pytest.raises(InvalidDestination, match="inside the source"):
        check_destination(tmp_path / "scans", tmp_path / "scans" / "colour")


def test_check_destination_refuses_a_symlink_that_leads_into_the_source(tmp_path: Path) -> None:
    (tmp_path / "scans" / "out").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "scans" / "out")
    with pytest.raises(InvalidDestination):
        check_destination(tmp_path / "scans", tmp_path / "link")


def test_check_destination_allows_a_sibling_with_a_common_prefix(tmp_path: Path) -> None:
    check_destination(tmp_path / "scans", tmp_path / "scans-colour")
    check_destination(tmp_path / "scans" / "box", tmp_path / "scans")


@pytest.mark.parametrize(
    ("source", "output"),
    [
        ("s3://scans/box", "s3://scans/box"),
        ("s3://scans/box", "s3://scans/box/colour"),
        ("s3://scans/box/", "s3://scans/box/colour/"),
        ("s3://scans", "s3://scans/colour"),
    ],
)
def test_check_destination_refuses_an_s3_prefix_inside_the_source(source: str, output: str) -> None:
    with pytest.raises(InvalidDestination):
        check_destination(source, output)


@pytest.mark.parametrize(
    ("source", "output"),
    [
        ("s3://scans/box", "s3://scans/box-colour"),
        ("s3://scans/box", "s3://colour/box"),
        ("s3://scans/box/a", "s3://scans/box"),
        ("s3://scans/box", "/srv/colour"),
    ],
)
def test_check_destination_allows_s3_prefixes_outside_the_source(source: str, output: str) -> None:
    check_destination(source, output)


def test_plan_outputs_mirrors_relative_paths_under_the_output() -> None:
    rows = list(
        plan_outputs(
            [_object("album/p1.tif", "tiff"), _object("p2.bmp", "bmp")],
            output="s3://colour/box",
        )
    )
    assert [row.output_uri for row in rows] == [
        "s3://colour/box/album/p1.tif",
        "s3://colour/box/p2.bmp.png",
    ]
    assert [row.source_uri for row in rows] == [
        "s3://scans/box/album/p1.tif",
        "s3://scans/box/p2.bmp",
    ]
    assert rows[0].relative_path == "album/p1.tif"
    assert (rows[0].size, rows[0].checksum, rows[0].checksum_kind) == (
        10,
        "etag-album/p1.tif",
        "etag",
    )


def test_plan_outputs_refuses_names_differing_only_in_case_on_a_case_insensitive_destination() -> (
    None
):
    objects = [_object("X.png", "png"), _object("b.png", "png"), _object("x.png", "png")]
    rows = plan_outputs(objects, output="/srv/colour", case_insensitive=True)
    with pytest.raises(OutputCollision, match="X.png and x.png"):
        list(rows)


def test_plan_outputs_allows_names_differing_only_in_case_on_a_case_sensitive_destination() -> None:
    objects = [_object("X.png", "png"), _object("x.png", "png")]
    rows = list(plan_outputs(objects, output="s3://colour", case_insensitive=False))
    assert [row.output_uri for row in rows] == ["s3://colour/X.png", "s3://colour/x.png"]


def test_plan_outputs_refuses_an_unknown_output_format_before_reading_anything() -> None:
    def objects() -> Iterator[ScannedObject]:
        raise AssertionError("the objects must not be read")
        yield  # a generator: the error would come with its first object

    with pytest.raises(ValueError):
        next(plan_outputs(objects(), output="s3://colour", output_format="gif"))


def test_is_case_insensitive_is_false_for_s3() -> None:
    assert is_case_insensitive("s3://colour/box") is False


def test_is_case_insensitive_probes_a_local_folder_and_leaves_nothing_behind(
    tmp_path: Path,
) -> None:
    # The test folder lives on a case-sensitive file system on the CI machines (Linux).
    assert is_case_insensitive(tmp_path / "not" / "yet" / "there") is False
    assert list(tmp_path.iterdir()) == []
