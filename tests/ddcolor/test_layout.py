"""Tests of checkpoint layouts (ddcolor.layout) and reading them without torch (ddcolor.headers)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from ddcolor.build import create_model
from ddcolor.errors import CheckpointError
from ddcolor.headers import read_record
from ddcolor.layout import (
    UNUSED_KEYS,
    Entry,
    Layout,
    check_layout,
    detect_arch,
    drop_unused,
    is_official,
    layout_of,
    official_layout,
    unwrap,
)
from ddcolor.registry import ARCHITECTURES, MODELS


def _small_state() -> dict[str, torch.Tensor]:
    """Tensors of every kind the reader must describe: dtypes, views, shared storage."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    return {
        "weight": torch.randn(3, 2, 4, 4),
        "transposed": base.t(),
        "slice": base[1:3],
        "half": torch.zeros(5, dtype=torch.float16),
        "brain": torch.ones(2, 2, dtype=torch.bfloat16),
        "count": torch.tensor(7, dtype=torch.int64),
        "flags": torch.zeros(3, dtype=torch.bool),
        "empty": torch.zeros(0, 4),
    }


def _layout(arch: str) -> Layout:
    """A copy of an architecture's official layout, to damage."""
    return dict(official_layout(arch))


def _rewrite_zip(source: Path, target: Path, member_suffix: str, data: bytes) -> None:
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            content = data if info.filename.endswith(member_suffix) else old.read(info)
            new.writestr(info.filename, content)


# --------------------------------------------------------------------------- official lists


@pytest.mark.parametrize("arch", ["tiny", "large"])
def test_official_layout_equals_the_network_built_on_the_meta_device(arch: str) -> None:
    with torch.device("meta"):
        built = create_model(ARCHITECTURES[arch])

    assert official_layout(arch) == layout_of(built.state_dict())


def test_every_released_model_is_official_and_a_changed_structure_is_not() -> None:
    assert all(is_official(config) for config in MODELS.values())
    assert all(is_official(config) for config in ARCHITECTURES.values())
    assert not is_official(replace(ARCHITECTURES["tiny"], dec_layers=3))
    assert not is_official(replace(ARCHITECTURES["tiny"], arch="other"))


# --------------------------------------------------------------------------- unwrapping


def test_unwrap_prefers_params_over_params_ema() -> None:
    params, ema = {"a": Entry((1,), "float32")}, {"a": Entry((2,), "float32")}

    state, wrapper = unwrap({"params": params, "params_ema": ema})

    assert (state, wrapper) == (params, "params")


def test_unwrap_uses_params_ema_when_params_is_absent() -> None:
    ema = {"a": Entry((2,), "float32")}

    assert unwrap({"params_ema": ema}) == (ema, "params_ema")


def test_unwrap_takes_a_bare_state_dict_as_is() -> None:
    bare = {"a": Entry((2,), "float32")}

    assert unwrap(bare) == (bare, None)


def test_only_the_two_head_cls_keys_are_dropped() -> None:
    state = {
        "encoder.arch.head_cls.weight": torch.zeros(4, 8),
        "encoder.arch.head_cls.bias": torch.zeros(4),
        "encoder.arch.head_cls.extra": torch.zeros(1),
        "encoder.arch.norm.weight": torch.zeros(8),
    }

    kept, dropped = drop_unused(state)

    assert dropped == UNUSED_KEYS
    assert sorted(kept) == ["encoder.arch.head_cls.extra", "encoder.arch.norm.weight"]


# --------------------------------------------------------------------------- recognition and checks


@pytest.mark.parametrize("arch", ["tiny", "large"])
def test_detect_arch_recognises_each_architecture_from_shapes(arch: str) -> None:
    assert detect_arch(official_layout(arch)) == arch


def test_detect_arch_still_recognises_a_large_file_without_its_stem() -> None:
    layout = _layout("large")
    del layout["encoder.arch.downsample_layers.0.0.weight"]

    assert detect_arch(layout) == "large"


def test_detect_arch_rejects_a_state_dict_of_another_network() -> None:
    layout = {"fc.weight": Entry((10, 4), "float32"), "fc.bias": Entry((10,), "float32")}

    with pytest.raises(CheckpointError, match="not a DDColor checkpoint.*fc.weight"):
        detect_arch(layout, source="resnet.pth")


def test_check_layout_names_missing_unexpected_and_misshaped_keys() -> None:
    layout = _layout("large")
    del layout["decoder.color_decoder.query_feat.weight"]
    layout["decoder.extra.weight"] = Entry((3,), "float32")
    layout["refine_net.0.0.weight_orig"] = Entry((2, 104, 1, 1), "float32")

    with pytest.raises(CheckpointError) as caught:
        check_layout(layout, ARCHITECTURES["large"], source="damaged.pth")

    message = str(caught.value)
    assert "damaged.pth" in message
    assert "1 missing key (decoder.color_decoder.query_feat.weight)" in message
    assert "1 unexpected key (decoder.extra.weight)" in message
    assert (
        "1 mis-shaped key (refine_net.0.0.weight_orig is [2, 104, 1, 1], expected [2, 103, 1, 1])"
        in message
    )


def test_check_layout_counts_all_problems_but_quotes_only_the_first_few() -> None:
    layout = _layout("tiny")
    removed = [key for key in layout if key.startswith("encoder.arch.stages.2.")][:12]
    for key in removed:
        del layout[key]

    with pytest.raises(CheckpointError, match=r"12 missing keys \(.*, and 7 more\)"):
        check_layout(layout, ARCHITECTURES["tiny"])


def test_check_layout_rejects_integer_tensors_for_float_parameters() -> None:
    layout = _layout("tiny")
    layout["mean"] = Entry((1, 3, 1, 1), "int64")

    with pytest.raises(CheckpointError, match="mean is int64, expected float32"):
        check_layout(layout, ARCHITECTURES["tiny"])


def test_check_layout_recognises_the_architecture_of_the_official_key_list(
    official_keys: Callable[[str], list[tuple[str, tuple[int, ...], str]]],
) -> None:
    for arch in ("tiny", "large"):
        layout = {key: Entry(shape, dtype) for key, shape, dtype in official_keys(arch)}
        assert check_layout(layout, None) == ARCHITECTURES[arch]


# --------------------------------------------------------------------------- torch zip files


@pytest.mark.parametrize("wrapper", [None, "params", "params_ema"])
def test_torch_zip_layout_equals_the_saved_tensors(wrapper: str | None, tmp_path: Path) -> None:
    state = _small_state()
    path = tmp_path / "weights.pth"
    torch.save(state if wrapper is None else {wrapper: state, "iter": 5}, path)

    read = read_record(path)

    assert read == (layout_of(state) if wrapper is None else {wrapper: layout_of(state), "iter": 5})


def test_module_state_dict_with_parameters_and_int_buffers_is_read(tmp_path: Path) -> None:
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))
    path = tmp_path / "module.pt"
    torch.save(module.state_dict(), path)
    # Parameters themselves, not their data, pickled through _rebuild_parameter.
    params = tmp_path / "params.pt"
    torch.save(OrderedDict(module.named_parameters()), params)

    assert read_record(path) == layout_of(module.state_dict())
    assert read_record(params) == layout_of(dict(module.named_parameters()))


def test_unused_head_keys_are_read_and_dropped_as_on_load(tmp_path: Path) -> None:
    state = {
        "weight": torch.zeros(2),
        UNUSED_KEYS[0]: torch.zeros(4, 8),
        UNUSED_KEYS[1]: torch.zeros(4),
    }
    path = tmp_path / "ddcolor.pth"
    torch.save({"params": state}, path)

    record = read_record(path)
    assert isinstance(record, dict)
    inner, wrapper = unwrap(record)
    assert isinstance(inner, dict)

    assert wrapper == "params"
    assert drop_unused(inner) == ({"weight": Entry((2,), "float32")}, UNUSED_KEYS)


def test_legacy_pickle_format_is_left_to_torch(tmp_path: Path) -> None:
    path = tmp_path / "old.pth"
    torch.save(_small_state(), path, _use_new_zipfile_serialization=False)

    assert read_record(path) is None


class _Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (os.rename, (str(self.marker), str(self.marker) + ".moved"))


def test_a_record_naming_anything_else_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    marker.write_text("still here")
    path = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2)}, path)
    _rewrite_zip(path, tmp_path / "evil2.pth", "/data.pkl", pickle.dumps({"a": _Payload(marker)}))

    assert read_record(tmp_path / "evil2.pth") is None
    assert marker.read_text() == "still here"


def test_a_storage_shorter_than_its_tensors_is_left_to_torch(tmp_path: Path) -> None:
    path = tmp_path / "short.pth"
    torch.save({"weight": torch.zeros(64)}, path)
    damaged = tmp_path / "damaged.pth"
    _rewrite_zip(path, damaged, "/data/0", b"\0" * 100)

    assert read_record(damaged) is None


def test_a_truncated_archive_is_left_to_torch(tmp_path: Path) -> None:
    path = tmp_path / "whole.pth"
    torch.save(_small_state(), path)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[:-200])

    assert read_record(cut) is None


def test_a_file_holding_one_tensor_is_read_as_one_entry(tmp_path: Path) -> None:
    path = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), path)

    assert read_record(path) == Entry((3,), "float32")


# --------------------------------------------------------------------------- safetensors


def test_safetensors_layout_equals_the_saved_tensors(tmp_path: Path) -> None:
    state = {key: value.contiguous() for key, value in _small_state().items() if key != "slice"}
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file(state, path, metadata={"format": "pt"})

    assert read_record(path) == layout_of(state)


def test_a_truncated_safetensors_file_is_left_to_the_library(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(256)}, path)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-8])

    assert read_record(cut) is None


def test_a_safetensors_header_longer_than_the_file_is_left_to_the_library(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes((10_000).to_bytes(8, "little") + b'{"a": 1}')

    assert read_record(path) is None


# --------------------------------------------------------------------------- without torch


def test_identify_checkpoint_does_not_import_torch(tmp_path: Path) -> None:
    path = tmp_path / "model.safetensors"
    safetensors.torch.save_file({"weight": torch.zeros(2)}, path)
    code = (
        "import sys\n"
        "from ddcolor.errors import CheckpointError\n"
        "from ddcolor.checkpoints import identify_checkpoint\n"
        "try:\n"
        f"    identify_checkpoint({str(path)!r})\n"
        "except CheckpointError as exc:\n"
        "    print('refused:', 'is not a DDColor checkpoint' in str(exc))\n"
        "print('torch' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )

    assert done.stdout.split("\n")[:2] == ["refused: True", "False"]
