"""Tests of checkpoint reading, validation and loading, on synthetic official-layout files.

Loading is what the pipeline does: ``read_checkpoint`` returns the state dict and its
provenance, ``build_ddcolor`` builds the network and loads the state dict strictly.
"""

from __future__ import annotations

import hashlib
import pickle
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import safetensors.torch
import torch

from ddcolor import checkpoints, digests
from ddcolor.build import build_ddcolor
from ddcolor.checkpoints import (
    CheckpointInfo,
    identify_checkpoint,
    model_name_from_path,
    read_checkpoint,
    sha256_file,
)
from ddcolor.digests import DIGEST_CACHE_VARIABLE
from ddcolor.errors import CheckpointError
from ddcolor.layout import (
    UNUSED_KEYS,
)
from ddcolor.modeling.ddcolor import DDColor
from ddcolor.registry import MODELS

#: The three layouts the official weights are published in.
LAYOUTS = ("basicsr", "huggingface", "safetensors")
#: Bytes kept of a checkpoint to make a truncated copy (the files are far larger).
TRUNCATED_BYTES = 4 << 20
#: Classification-head width (channels) per architecture, for the unused head_cls keys.
HEAD_WIDTH = {"large": 1536, "tiny": 768}

StateDict = dict[str, torch.Tensor]


def write_checkpoint(layout: str, state: StateDict, arch: str, directory: Path) -> Path:
    """Write ``state`` in one of the official layouts and return the file's path.

    Args:
        layout: ``basicsr`` (``{"params": ...}`` with the two head_cls keys, as the
            released ``.pth`` files), ``huggingface`` (bare ``pytorch_model.bin``) or
            ``safetensors`` (bare ``model.safetensors``).
        state: The state dict.
        arch: ``large`` or ``tiny``, for the head_cls width.
        directory: Where to write.

    Returns:
        The new file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if layout == "basicsr":
        head = {
            "encoder.arch.head_cls.weight": torch.randn(4, HEAD_WIDTH[arch]),
            "encoder.arch.head_cls.bias": torch.randn(4),
        }
        path = directory / "ddcolor_checkpoint.pth"
        torch.save({"params": {**state, **head}}, path)
    elif layout == "huggingface":
        path = directory / "pytorch_model.bin"
        torch.save(state, path)
    else:
        path = directory / "model.safetensors"
        safetensors.torch.save_file(state, path)
    return path


@dataclass(frozen=True)
class CheckpointFiles:
    """One architecture's source state dict and a file of it in each official layout."""

    arch: str
    state: StateDict
    files: dict[str, Path]


def _write_all(arch: str, state: StateDict, root: Path) -> CheckpointFiles:
    files = {layout: write_checkpoint(layout, state, arch, root / layout) for layout in LAYOUTS}
    return CheckpointFiles(arch=arch, state=state, files=files)


@pytest.fixture(scope="session")
def tiny_files(
    tiny_model: DDColor, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CheckpointFiles]:
    """The randomised tiny model saved in every official layout (removed afterwards)."""
    root = tmp_path_factory.mktemp("tiny-checkpoints")
    state = {key: value.clone() for key, value in tiny_model.state_dict().items()}
    yield _write_all("tiny", state, root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def large_files(
    large_state_dict: StateDict, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CheckpointFiles]:
    """The synthetic large state dict saved in every official layout (removed afterwards)."""
    root = tmp_path_factory.mktemp("large-checkpoints")
    yield _write_all("large", large_state_dict, root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def scratch_dir(tmp_path: Path) -> Iterator[Path]:
    """A temporary folder removed after the test, as checkpoint copies take hundreds of MB."""
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


def load(path: Path, model: str | None = None) -> tuple[DDColor, CheckpointInfo]:
    """Read a checkpoint and build its network, as ``load_colorizer`` does."""
    state_dict, info = read_checkpoint(path, model=model)
    return build_ddcolor(model or info.arch, state_dict=state_dict), info


def _assert_same_state(model: DDColor, state: StateDict) -> None:
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    different = [key for key in state if not torch.equal(loaded[key], state[key])]
    assert different == []


# --------------------------------------------------------------------------- official layouts


@pytest.mark.parametrize(
    ("layout", "file_format", "wrapper", "dropped"),
    [
        ("basicsr", "torch", "params", UNUSED_KEYS),
        ("huggingface", "torch", None, ()),
        ("safetensors", "safetensors", None, ()),
    ],
)
def test_tiny_checkpoint_in_each_official_layout_reproduces_the_source_model(
    layout: str,
    file_format: str,
    wrapper: str | None,
    dropped: tuple[str, ...],
    tiny_files: CheckpointFiles,
    tiny_model: DDColor,
) -> None:
    path = tiny_files.files[layout]
    rgb = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(20))

    model, info = load(path)

    assert not model.training
    assert not hasattr(model, "checkpoint")  # the caller keeps the provenance
    _assert_same_state(model, tiny_files.state)
    with torch.no_grad():
        torch.testing.assert_close(model(rgb), tiny_model(rgb), rtol=1e-5, atol=1e-6)
    assert info == CheckpointInfo(
        path=path,
        sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
        size_bytes=path.stat().st_size,
        model_name="tiny",
        arch="tiny",
        format=file_format,
        wrapper=wrapper,
        dropped_keys=dropped,
    )


@pytest.mark.slow
@pytest.mark.parametrize("layout", LAYOUTS)
def test_large_checkpoint_in_each_official_layout_loads_every_tensor_unchanged(
    layout: str, large_files: CheckpointFiles
) -> None:
    model, info = load(large_files.files[layout])

    assert not model.training
    assert info.arch == "large"
    _assert_same_state(model, large_files.state)


@pytest.mark.slow
def test_large_checkpoint_reproduces_the_output_of_the_source_model(
    large_files: CheckpointFiles, large_model: DDColor
) -> None:
    rgb = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(21))

    model, _ = load(large_files.files["basicsr"])

    with torch.no_grad():
        expected = large_model(rgb)
        torch.testing.assert_close(model(rgb), expected, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(expected).all()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("model", [None, "ddcolor_paper_tiny"])
def test_identify_checkpoint_gives_the_record_read_checkpoint_gives(
    layout: str, model: str | None, tiny_files: CheckpointFiles
) -> None:
    path = tiny_files.files[layout]

    assert identify_checkpoint(path, model=model) == read_checkpoint(path, model=model)[1]


def test_identify_checkpoint_reads_the_legacy_format_with_torch(
    tiny_files: CheckpointFiles, scratch_dir: Path
) -> None:
    path = scratch_dir / "ddcolor_paper_tiny.pth"
    torch.save({"params": tiny_files.state}, path, _use_new_zipfile_serialization=False)

    info = identify_checkpoint(path)

    assert (info.model_name, info.arch, info.wrapper) == ("ddcolor_paper_tiny", "tiny", "params")
    assert info == read_checkpoint(path)[1]


def test_naming_a_checkpoint_again_takes_its_remembered_digest_a_load_always_hashes(
    tiny_files: CheckpointFiles,
    scratch_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(DIGEST_CACHE_VARIABLE, str(scratch_dir / "digests"))
    monkeypatch.setattr(digests, "SETTLE_S", 0.0)
    path = scratch_dir / "ddcolor_paper_tiny.pth"
    shutil.copyfile(tiny_files.files["basicsr"], path)
    hashed: list[Path] = []

    def counted(file: str | Path) -> str:
        hashed.append(Path(file))
        return sha256_file(file)

    monkeypatch.setattr(checkpoints, "sha256_file", counted)
    expected = hashlib.sha256(path.read_bytes()).hexdigest()

    named = [identify_checkpoint(path).sha256 for _ in range(3)]
    assert named == [expected] * 3 and len(hashed) == 1
    assert read_checkpoint(path)[1].sha256 == expected and len(hashed) == 2
    # New bytes under the same name are hashed again, by naming as by loading.
    # (The unused head keys are drawn at random: another file of the same layout.)
    shutil.copyfile(write_checkpoint("basicsr", tiny_files.state, "tiny", scratch_dir / "b"), path)
    assert identify_checkpoint(path).sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert len(hashed) == 3


def test_sha256_file_equals_hashlib_on_the_whole_file(tmp_path: Path) -> None:
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 12345)

    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("layout", ["basicsr", "safetensors"])
def test_file_format_is_recognised_from_the_content_when_the_suffix_is_unknown(
    layout: str, tiny_files: CheckpointFiles, tmp_path: Path
) -> None:
    link = tmp_path / "weights.dat"
    link.symlink_to(tiny_files.files[layout])

    state, info = read_checkpoint(link)

    assert info.format == ("safetensors" if layout == "safetensors" else "torch")
    assert set(state) == set(tiny_files.state)


# --------------------------------------------------------------------------- names and building


@pytest.mark.parametrize(
    ("relative", "arch", "name"),
    [
        ("ddcolor_artistic.pth", "large", "ddcolor_artistic"),
        ("weights/ddcolor_paper.pth", "large", "ddcolor_paper"),
        (
            "models--piddnad--ddcolor_modelscope/snapshots/0a1b/pytorch_model.bin",
            "large",
            "ddcolor_modelscope",
        ),
        ("damo/cv_ddcolor_image-colorization/pytorch_model.pt", "large", "ddcolor_modelscope"),
        ("ddcolor_paper_tiny.pth", "tiny", "ddcolor_paper_tiny"),
        (
            "models--piddnad--ddcolor_paper_tiny/snapshots/9f/model.safetensors",
            "tiny",
            "ddcolor_paper_tiny",
        ),
        ("ddcolor_paper_tiny.pth", "large", "large"),
        ("ddcolor_paper.pth", "tiny", "tiny"),
        ("ddcolor_paperback.pth", "large", "large"),
        ("checkpoints/net_g_40000.pth", "large", "large"),
    ],
)
def test_model_name_comes_from_the_file_or_its_folders_else_the_architecture(
    relative: str, arch: str, name: str
) -> None:
    assert model_name_from_path(Path(relative), arch) == name


def test_read_checkpoint_names_the_model_from_the_file_name(
    tiny_files: CheckpointFiles, tmp_path: Path
) -> None:
    link = tmp_path / "ddcolor_paper_tiny.pth"
    link.symlink_to(tiny_files.files["basicsr"])

    _, info = read_checkpoint(link)

    assert (info.model_name, info.arch) == ("ddcolor_paper_tiny", "tiny")


def test_read_checkpoint_refuses_a_file_of_the_other_architecture_than_the_named_model(
    tiny_files: CheckpointFiles,
) -> None:
    with pytest.raises(CheckpointError, match="holds a tiny DDColor, but ddcolor_paper is large"):
        read_checkpoint(tiny_files.files["basicsr"], model="ddcolor_paper")


def test_build_ddcolor_loads_a_state_dict_under_the_given_name(
    tiny_files: CheckpointFiles,
) -> None:
    model, info = load(tiny_files.files["huggingface"], model="ddcolor_paper_tiny")

    assert not model.training
    assert info.model_name == "ddcolor_paper_tiny"
    _assert_same_state(model, tiny_files.state)


def test_weights_saved_in_half_precision_are_built_in_float32(
    tiny_files: CheckpointFiles, tmp_path: Path
) -> None:
    half = {k: v.half() if v.is_floating_point() else v for k, v in tiny_files.state.items()}
    path = tmp_path / "half.safetensors"
    safetensors.torch.save_file(half, path)

    model, _ = load(path)

    assert {value.dtype for value in model.state_dict().values()} == {torch.float32, torch.int64}


def test_build_ddcolor_loads_strictly(tiny_files: CheckpointFiles) -> None:
    state = dict(tiny_files.state)
    del state["mean"]

    with pytest.raises(
        CheckpointError, match=r"does not match DDColor ddcolor_paper_tiny: 1 missing key \(mean\)"
    ):
        build_ddcolor("ddcolor_paper_tiny", state_dict=state)


def test_a_structure_other_than_the_official_ones_is_checked_by_the_strict_load(
    tiny_files: CheckpointFiles,
) -> None:
    shallow = replace(MODELS["ddcolor_paper_tiny"], name="shallow", dec_layers=3)

    state, info = read_checkpoint(tiny_files.files["huggingface"], model=shallow)

    assert info.model_name == "shallow"
    with pytest.raises(CheckpointError, match="does not match DDColor shallow: 108 unexpected"):
        build_ddcolor(shallow, state_dict=state)


# --------------------------------------------------------------------------- not state dicts


@pytest.mark.parametrize(
    "obj",
    [
        torch.zeros(3),
        [torch.zeros(3)],
        {"params": [1, 2]},
        {"a": 1},
        {"state_dict": {"a": torch.ones(1)}},
    ],
    ids=["tensor", "list", "params-list", "int-value", "nested-dict"],
)
def test_files_that_hold_no_state_dict_are_refused(obj: object, tmp_path: Path) -> None:
    path = tmp_path / "x.pth"
    torch.save(obj, path)

    with pytest.raises(CheckpointError, match="not a state dict"):
        read_checkpoint(path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        identify_checkpoint(path)


# --------------------------------------------------------------------------- damaged files


def test_state_dict_file_missing_a_key_raises_checkpoint_error_naming_it(
    tiny_files: CheckpointFiles, scratch_dir: Path
) -> None:
    state = dict(tiny_files.state)
    del state["decoder.last_shuf.conv.0.bias"]
    path = scratch_dir / "ddcolor_damaged.safetensors"
    safetensors.torch.save_file(state, path)

    with pytest.raises(CheckpointError) as caught:
        load(path)
    with pytest.raises(CheckpointError) as quick:
        identify_checkpoint(path)

    assert "1 missing key (decoder.last_shuf.conv.0.bias)" in str(caught.value)
    assert str(path) in str(caught.value)
    assert str(quick.value) == str(caught.value)


def test_identify_checkpoint_refuses_a_file_of_the_other_architecture(
    tiny_files: CheckpointFiles,
) -> None:
    with pytest.raises(CheckpointError, match="holds a tiny DDColor, but ddcolor_paper is large"):
        identify_checkpoint(tiny_files.files["huggingface"], model="ddcolor_paper")


@pytest.mark.parametrize("layout", ["basicsr", "safetensors"])
def test_truncated_file_raises_checkpoint_error(
    layout: str, tiny_files: CheckpointFiles, scratch_dir: Path
) -> None:
    source = tiny_files.files[layout]
    path = scratch_dir / f"truncated{source.suffix}"
    with open(source, "rb") as handle:
        path.write_bytes(handle.read(TRUNCATED_BYTES))

    with pytest.raises(CheckpointError, match="truncated"):
        load(path)
    with pytest.raises(CheckpointError, match="truncated"):
        identify_checkpoint(path)


@pytest.mark.parametrize("suffix", [".pth", ".pt", ".bin", ".safetensors", ".ckpt"])
def test_random_bytes_raise_checkpoint_error(suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"noise{suffix}"
    generator = torch.Generator().manual_seed(23)
    noise = torch.randint(0, 256, (4096,), generator=generator, dtype=torch.uint8)
    path.write_bytes(noise.numpy().tobytes())

    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load(path)


class _Payload:
    """An arbitrary object that weights_only loading must refuse to unpickle."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("this must never run",))


def test_pickle_with_arbitrary_objects_is_refused_by_weights_only_loading(tmp_path: Path) -> None:
    path = tmp_path / "ddcolor_paper.pth"
    with open(path, "wb") as handle:
        pickle.dump({"params": {"a": 1}, "payload": _Payload()}, handle, protocol=2)

    with pytest.raises(CheckpointError, match="weights_only=True"):
        load(path)


def test_torch_file_holding_a_tensor_is_not_a_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)

    with pytest.raises(CheckpointError, match="not a state dict"):
        load(path)


def test_missing_file_raises_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        read_checkpoint(tmp_path / "ddcolor_paper.pth")
