"""`panchro colorize` on real files: formats, bit depth, alpha, folders, errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from click.testing import CliRunner, Result
from PIL import Image

from ddcolor.build import build_ddcolor
from ddcolor.checkpoints import sha256_file
from panchro.cli import cli

#: The sample collection shipped with the project.
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
#: Smallest input size: keeps the model's forward quick on the CPU.
SIZE = "256"


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """One torch thread: quicker than two on a shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _no_configured_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PANCHRO_WEIGHTS", raising=False)
    monkeypatch.setenv("PANCHRO_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("PANCHRO_DEVICE", "cpu")


def run(*args: str) -> Result:
    """Invoke the CLI in-process with the given arguments."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def xmp_of(path: Path) -> str:
    """The XMP packet of an image file, as text ('' if none)."""
    data = path.read_bytes()
    start = data.find(b"<x:xmpmeta")
    end = data.find(b"</x:xmpmeta>")
    return data[start:end].decode("utf-8", "replace") if start >= 0 else ""


def test_colorize_turns_a_jpeg_into_a_same_size_colour_jpeg(tmp_path: Path) -> None:
    output = tmp_path / "out.jpg"
    result = run(
        "colorize", str(EXAMPLES / "camera.jpg"), str(output), "--untrained", "--size", SIZE
    )
    assert result.exit_code == 0, result.output
    with Image.open(output) as image, Image.open(EXAMPLES / "camera.jpg") as original:
        assert image.format == "JPEG"
        assert image.mode == "RGB"
        assert image.size == original.size
    assert "UNTRAINED" in xmp_of(output)


def test_colorize_keeps_sixteen_bits_of_a_16_bit_tiff(tmp_path: Path) -> None:
    output = tmp_path / "coins.tif"
    result = run(
        "colorize", str(EXAMPLES / "coins-16bit.tif"), str(output), "--untrained", "--size", SIZE
    )
    assert result.exit_code == 0, result.output
    colour = tifffile.imread(output)
    original = tifffile.imread(EXAMPLES / "coins-16bit.tif")
    assert colour.dtype == np.uint16
    assert colour.shape == (*original.shape, 3)
    # Values between the 257-multiples of 8-bit data show the 16 bits were kept.
    assert np.count_nonzero(colour % 257) > colour.size // 2


def test_colorize_keeps_the_alpha_of_a_png(tmp_path: Path) -> None:
    output = tmp_path / "brick.png"
    source = EXAMPLES / "brick-vignette.png"
    result = run("colorize", str(source), str(output), "--untrained", "--size", SIZE)
    assert result.exit_code == 0, result.output
    with Image.open(output) as image, Image.open(source) as original:
        assert image.mode == "RGBA"
        alpha = np.asarray(image)[..., 3]
        assert np.array_equal(alpha, np.asarray(original.getchannel("A")))


def test_colorize_folder_mirrors_paths_and_skips_existing_outputs(tmp_path: Path) -> None:
    source = tmp_path / "scans"
    (source / "box1").mkdir(parents=True)
    shutil.copy(EXAMPLES / "coins.png", source / "box1" / "coins.png")
    shutil.copy(EXAMPLES / "camera.jpg", source / "camera.jpg")
    (source / "notes.txt").write_text("not an image")
    output = tmp_path / "colour"

    first = run("colorize", str(source), str(output), "--untrained", "--size", SIZE)
    assert first.exit_code == 0, first.output
    assert (output / "box1" / "coins.png").is_file()
    assert (output / "camera.jpg").is_file()
    assert not (output / "notes.txt").exists()
    assert "2 colorized, 0 skipped" in first.output
    stamp = (output / "camera.jpg").stat().st_mtime_ns

    second = run("colorize", str(source), str(output), "--untrained", "--size", SIZE)
    assert "0 colorized, 2 skipped" in second.output
    assert (output / "camera.jpg").stat().st_mtime_ns == stamp


def test_colorize_reports_a_corrupt_file_and_still_does_the_others(tmp_path: Path) -> None:
    source = tmp_path / "scans"
    source.mkdir()
    shutil.copy(EXAMPLES / "coins.png", source / "good.png")
    good = (EXAMPLES / "camera.jpg").read_bytes()
    (source / "broken.jpg").write_bytes(good[: len(good) // 3])
    original = (source / "broken.jpg").read_bytes()
    output = tmp_path / "colour"

    result = run("colorize", str(source), str(output), "--untrained", "--size", SIZE)

    assert result.exit_code == 1
    assert "FAILED" in result.output and "broken.jpg" in result.output
    assert (output / "good.png").is_file()
    assert not (output / "broken.jpg").exists()
    assert (source / "broken.jpg").read_bytes() == original
    leftovers = [p for p in output.rglob("*") if p.is_file() and p.name != "good.png"]
    assert leftovers == []


def test_colorize_records_the_checkpoint_sha256_in_the_output(tmp_path: Path) -> None:
    weights = tmp_path / "ddcolor_paper_tiny.pth"
    torch.manual_seed(1)
    torch.save({"params": build_ddcolor("ddcolor_paper_tiny").state_dict()}, weights)
    output = tmp_path / "out.png"
    result = run(
        "colorize",
        str(EXAMPLES / "coins.png"),
        str(output),
        "--weights",
        str(weights),
        "--size",
        SIZE,
    )
    assert result.exit_code == 0, result.output
    xmp = xmp_of(output)
    assert sha256_file(weights) in xmp
    assert "UNTRAINED" not in xmp


def test_colorize_without_weights_says_how_to_get_them(tmp_path: Path) -> None:
    result = run("colorize", str(EXAMPLES / "coins.png"), str(tmp_path / "o.png"))
    assert result.exit_code == 1
    assert "--weights" in result.output and "--untrained" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("size", ["300", "128", "4096"])
def test_colorize_refuses_sizes_the_network_cannot_take(tmp_path: Path, size: str) -> None:
    result = run("colorize", str(EXAMPLES / "coins.png"), str(tmp_path / "o.png"), "--size", size)
    assert result.exit_code == 2
    assert "multiple of 32 from 256 to 2048" in result.output


def test_colorize_refuses_an_output_folder_inside_the_input(tmp_path: Path) -> None:
    source = tmp_path / "scans"
    source.mkdir()
    shutil.copy(EXAMPLES / "coins.png", source / "a.png")
    result = run("colorize", str(source), str(source / "colour"), "--untrained")
    assert result.exit_code == 2
    assert "must not be inside" in result.output


def test_colorize_refuses_to_write_over_the_original(tmp_path: Path) -> None:
    original = tmp_path / "coins.png"
    shutil.copy(EXAMPLES / "coins.png", original)
    before = original.read_bytes()
    result = run("colorize", str(original), str(original), "--untrained", "--size", SIZE)
    assert result.exit_code == 1
    assert "over the original" in result.output
    assert original.read_bytes() == before


def test_cli_choices_are_those_of_the_model_registry() -> None:
    import click

    from ddcolor.registry import (
        DEFAULT_UPSAMPLE,
        OFFICIAL_MODELS,
        PRECISION_CHOICES,
        PRESETS,
        UPSAMPLE_METHODS,
    )
    from panchro.commands.colorize import colorize

    params = {param.name: param for param in colorize.params}

    def choices(name: str) -> tuple[str, ...]:
        kind = params[name].type
        assert isinstance(kind, click.Choice)
        return tuple(kind.choices)

    assert choices("model") == OFFICIAL_MODELS
    assert choices("upsample") == UPSAMPLE_METHODS
    assert choices("precision") == PRECISION_CHOICES
    assert set(choices("preset")) == set(PRESETS)
    assert params["upsample"].default == DEFAULT_UPSAMPLE


def test_output_format_chooses_the_format_and_format_still_works_as_its_old_spelling(
    tmp_path: Path,
) -> None:
    common = ("--untrained", "--size", SIZE)
    for folder in ("new", "old", "both"):
        (tmp_path / folder).mkdir()
    new = run(
        "colorize",
        str(EXAMPLES / "camera.jpg"),
        str(tmp_path / "new"),
        *common,
        "--output-format",
        "png",
    )
    old = run(
        "colorize", str(EXAMPLES / "camera.jpg"), str(tmp_path / "old"), *common, "--format", "png"
    )
    both = run(
        "colorize",
        str(EXAMPLES / "camera.jpg"),
        str(tmp_path / "both"),
        *common,
        "--format",
        "png",
        "--output-format",
        "webp",
    )

    assert new.exit_code == 0 and old.exit_code == 0, new.output + old.output
    for folder in ("new", "old"):
        with Image.open(tmp_path / folder / "camera.jpg.png") as image:
            assert image.format == "PNG"
    assert "deprecated" in old.stderr and "deprecated" not in new.stderr
    assert both.exit_code == 2 and "disagree" in both.output
    shown = run("colorize", "--help").stdout
    assert "--output-format" in shown and "--format" not in shown
