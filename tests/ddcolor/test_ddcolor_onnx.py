"""The ONNX Runtime backend against torch fp32: parity, the export cache, the seam's ladder."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ddcolor.checkpoints import CheckpointInfo
from ddcolor.errors import DDColorError, NetworkOutOfMemory
from ddcolor.onnx_runner import (
    EXPORT_KEY_PROPERTY,
    ONNX_OPSET,
    OnnxRunner,
    ensure_export,
    export_key,
    load_onnx_runner,
)
from ddcolor.pipeline import Colorizer, colorize
from ddcolor.runners import NetworkRunner, TorchRunner

pytest.importorskip("onnxruntime")

#: The export (tens of seconds on 2 cores) is shared by the module; the rest is seconds.
pytestmark = pytest.mark.slow

#: Largest |d ab| allowed between ONNX Runtime and torch, both fp32.
AB_TOLERANCE = 1e-4


def _fake_checkpoint(folder: Path) -> CheckpointInfo:
    """A checkpoint's provenance (the export only reads its folder and SHA-256)."""
    path = folder / "ddcolor_paper_tiny.pth"
    path.write_bytes(b"weights")
    return CheckpointInfo(
        path=path,
        sha256=hashlib.sha256(b"weights").hexdigest(),
        size_bytes=7,
        model_name="ddcolor_paper_tiny",
        arch="tiny",
        format="torch",
        wrapper=None,
        dropped_keys=(),
    )


@pytest.fixture(scope="module")
def exported(
    tiny_model: nn.Module, tmp_path_factory: pytest.TempPathFactory
) -> tuple[OnnxRunner, CheckpointInfo, Path]:
    """The tiny model exported once beside a checkpoint, with its runner and cache folder."""
    folder = tmp_path_factory.mktemp("weights")
    cache = tmp_path_factory.mktemp("onnx-cache")
    info = _fake_checkpoint(folder)
    runner = load_onnx_runner(
        tiny_model, model_name="ddcolor_paper_tiny", checkpoint=info, cache_dir=cache
    )
    return runner, info, cache


@pytest.mark.parametrize(("batch", "size"), [(1, 64), (2, 64), (1, 96), (2, 96)])
def test_onnx_matches_torch_fp32(
    exported: tuple[OnnxRunner, CheckpointInfo, Path],
    tiny_model: nn.Module,
    batch: int,
    size: int,
) -> None:
    """One export serves every batch and size (multiples of 32), within 1e-4 of torch fp32."""
    runner = exported[0]
    x = torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(size + batch))
    expected, _ = TorchRunner(tiny_model).predict(x, "fp32")
    ab, used = runner.predict(x, "fp32")
    assert used == "fp32" and ab.shape == (batch, 2, size, size)
    assert float(expected.abs().max()) > 10 * AB_TOLERANCE  # a comparison of something
    assert float((ab - expected).abs().max()) < AB_TOLERANCE


def test_export_is_cached_beside_the_checkpoint_and_marked(
    exported: tuple[OnnxRunner, CheckpointInfo, Path], tiny_model: nn.Module
) -> None:
    """The export sits beside the checkpoint, carries its key, and is reused as it is."""
    import onnx

    runner, info, cache = exported
    assert runner.path.parent == info.path.parent and not any(cache.iterdir())
    key = export_key("ddcolor_paper_tiny", info.sha256)
    assert key[:16] in runner.path.name and key != export_key("ddcolor_paper", info.sha256)
    props = {p.key: p.value for p in onnx.load(str(runner.path)).metadata_props}
    assert props[EXPORT_KEY_PROPERTY] == key
    before = runner.path.stat()
    again = ensure_export(
        tiny_model, model_name="ddcolor_paper_tiny", checkpoint=info, cache_dir=cache
    )
    assert again == runner.path and again.stat().st_mtime_ns == before.st_mtime_ns
    assert [p.name for p in info.path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_file_panchro_did_not_write_is_never_replaced(
    exported: tuple[OnnxRunner, CheckpointInfo, Path], tiny_model: nn.Module, tmp_path: Path
) -> None:
    """Foreign files where the export would go are left byte for byte; no export is used."""
    runner, _, _ = exported
    info = _fake_checkpoint(tmp_path)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    name = runner.path.name.removeprefix("ddcolor_paper_tiny.")
    beside = tmp_path / f"ddcolor_paper_tiny.{name}"
    cached = cache / name
    for path in (beside, cached):
        path.write_bytes(b"someone else's file")
    with pytest.raises(DDColorError, match="no place to read or write"):
        ensure_export(tiny_model, model_name="ddcolor_paper_tiny", checkpoint=info, cache_dir=cache)
    assert beside.read_bytes() == cached.read_bytes() == b"someone else's file"
    assert sorted(p.name for p in cache.iterdir()) == [name]


def test_an_export_in_a_cache_folder_others_can_write_is_never_read(
    exported: tuple[OnnxRunner, CheckpointInfo, Path], tiny_model: nn.Module, tmp_path: Path
) -> None:
    """Someone else could have planted a valid-looking export there: it is refused unread."""
    import onnx

    key = export_key("ddcolor_paper_tiny", "untrained")
    planted = onnx.load(str(exported[0].path))
    for prop in planted.metadata_props:
        if prop.key == EXPORT_KEY_PROPERTY:
            prop.value = key
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    target = cache / f"ddcolor_paper_tiny.opset{ONNX_OPSET}.{key[:16]}.onnx"
    onnx.save(planted, str(target))

    def export() -> Path:
        return ensure_export(
            tiny_model, model_name="ddcolor_paper_tiny", checkpoint=None, cache_dir=cache
        )

    assert export() == target  # it would pass for panchro's own

    cache.chmod(0o777)
    with pytest.raises(DDColorError, match="others can write it"):
        export()


def test_colorizer_on_onnx_runs_fp32_and_says_so(
    exported: tuple[OnnxRunner, CheckpointInfo, Path], tiny_model: nn.Module
) -> None:
    """The shared pipeline around ONNX gives torch fp32's image; bf16 asked is fp32 run."""
    runner = exported[0]
    image = np.random.default_rng(3).integers(0, 256, (64, 48), dtype=np.uint8)
    onnx_colorizer = Colorizer(tiny_model, precision="bf16", size=256, runner=runner)
    torch_colorizer = Colorizer(tiny_model, precision="fp32", size=256)
    got = onnx_colorizer.colorize(image)
    want = torch_colorizer.colorize(image)
    assert (got.precision, onnx_colorizer.precision) == ("fp32", "fp32")
    assert runner.label() == "onnx-cpu" and torch_colorizer.runner.label() == "cpu"
    assert int(np.abs(got.image.astype(int) - want.image).max()) <= 1


class _SmallDeviceRunner:
    """A runner whose device holds inputs up to ``limit`` pixels (as a GPU provider would)."""

    name = "onnx"
    device = torch.device("cpu")
    precisions = ("fp32",)

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.released = 0

    def predict(self, x: torch.Tensor, precision: str) -> tuple[torch.Tensor, str]:
        if x.shape[-1] > self.limit:
            raise NetworkOutOfMemory(f"{x.shape[-1]} px does not fit")
        return torch.zeros(x.shape[0], 2, *x.shape[2:]), "fp32"

    def release_memory(self) -> None:
        self.released += 1

    def label(self) -> str:
        return "onnx-cpu"


def test_runner_out_of_memory_climbs_the_same_ladder() -> None:
    """NetworkOutOfMemory from any runner makes the pipeline try the next smaller size."""
    runner = _SmallDeviceRunner(limit=384)
    assert isinstance(runner, NetworkRunner)
    image = np.full((40, 30), 90, dtype=np.uint8)
    result = colorize(runner, image, size=768, precision="fp32", upsample="nearest")
    assert (result.size, result.sizes_tried, runner.released) == (384, (768, 512, 384), 2)


def test_onnx_allocation_failure_is_out_of_memory(
    exported: tuple[OnnxRunner, CheckpointInfo, Path],
) -> None:
    """An execution provider's allocation failure is mapped to the ladder's signal."""

    class _FailingSession:
        def __init__(self, message: str) -> None:
            self.message = message

        def run(self, *_: object) -> None:
            raise RuntimeError(self.message)

    runner = OnnxRunner.__new__(OnnxRunner)
    runner.device = torch.device("cpu")
    x = torch.zeros(1, 3, 64, 64)
    runner.session = _FailingSession("BFCArena: Failed to allocate memory for requested buffer")
    with pytest.raises(NetworkOutOfMemory):
        runner.predict(x, "fp32")
    runner.session = _FailingSession("Non-zero status code returned while running Conv node")
    with pytest.raises(DDColorError, match="ONNX Runtime failed") as info:
        runner.predict(x, "fp32")
    assert not isinstance(info.value, NetworkOutOfMemory)
