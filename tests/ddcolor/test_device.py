"""Tests of ddcolor.device: device and precision resolution, with GPUs faked where needed."""

from __future__ import annotations

import ctypes
import subprocess
import sys

import pytest
import torch

from ddcolor.device import (
    CPU_AUTO_PRECISION,
    CPU_NATIVE_BF16_AUTO_PRECISION,
    GPU_AUTO_PRECISION,
    DeviceInfo,
    cpu_has_native_bf16,
    describe_device,
    resolve_device,
    resolve_precision,
)
from ddcolor.errors import DDColorError, UnsupportedPrecision


@pytest.fixture
def no_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def two_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: f"Fake GPU {index}")


@pytest.mark.usefixtures("no_gpu")
def test_auto_device_is_cpu_without_gpu() -> None:
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.usefixtures("two_gpus")
def test_auto_device_is_first_gpu_when_present() -> None:
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.usefixtures("two_gpus")
@pytest.mark.parametrize(("spec", "index"), [("cuda", 0), ("cuda:1", 1), (" CUDA:0 ", 0)])
def test_cuda_names_resolve_to_an_indexed_gpu(spec: str, index: int) -> None:
    assert resolve_device(spec) == torch.device("cuda", index)


@pytest.mark.usefixtures("no_gpu")
def test_cuda_requested_without_gpu_raises_a_clear_error() -> None:
    with pytest.raises(DDColorError, match="sees no GPU.*--device cpu"):
        resolve_device("cuda:0")


@pytest.mark.usefixtures("two_gpus")
def test_cuda_index_beyond_the_visible_gpus_is_rejected() -> None:
    with pytest.raises(DDColorError, match="sees 2 GPU"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu", ""])
def test_unknown_device_names_are_rejected(spec: str) -> None:
    with pytest.raises(DDColorError, match="unknown device"):
        resolve_device(spec)


def test_cpu_is_described_with_its_model_name() -> None:
    info = describe_device("cpu")
    assert info.backend == "cpu"
    assert info.index is None
    assert info.name
    assert str(info).startswith("cpu (")


@pytest.mark.usefixtures("two_gpus")
def test_gpu_on_a_cuda_build_is_described_as_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "hip", None)
    assert describe_device("cuda:1") == DeviceInfo(backend="cuda", name="Fake GPU 1", index=1)


@pytest.mark.usefixtures("two_gpus")
def test_gpu_on_a_rocm_build_is_described_as_rocm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "hip", "6.2.41133")
    info = describe_device(torch.device("cuda"))
    assert info == DeviceInfo(backend="rocm", name="Fake GPU 0", index=0)
    assert str(info) == "rocm:0 (Fake GPU 0)"


@pytest.mark.usefixtures("no_gpu")
def test_rocm_build_without_gpu_names_rocm_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.version, "hip", "6.2.41133")
    with pytest.raises(DDColorError, match="ROCm 6.2"):
        resolve_device("cuda")


def test_unsupported_device_types_are_not_described() -> None:
    with pytest.raises(DDColorError, match="unsupported device type"):
        describe_device("meta")


def test_auto_precision_is_fp16_on_gpu() -> None:
    assert resolve_precision("auto", "cuda:0") == GPU_AUTO_PRECISION == "fp16"


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"),
    [(True, False, "bf16"), (False, True, "bf16"), (False, False, "fp32")],
)
def test_auto_precision_on_cpu_is_bf16_only_where_it_is_native(
    monkeypatch: pytest.MonkeyPatch, avx512_bf16: bool, amx: bool, expected: str
) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    assert cpu_has_native_bf16() is (avx512_bf16 or amx)
    assert resolve_precision("auto", "cpu") == expected
    assert expected in (CPU_AUTO_PRECISION, CPU_NATIVE_BF16_AUTO_PRECISION)


@pytest.mark.parametrize("name", ["fp32", "fp16", "bf16", "BF16"])
def test_explicit_precision_is_kept_on_cpu(name: str) -> None:
    assert resolve_precision(name, "cpu") == name.lower()


@pytest.mark.parametrize("name", ["int8", "half", "fp64", ""])
def test_unknown_precision_is_rejected(name: str) -> None:
    with pytest.raises(UnsupportedPrecision):
        resolve_precision(name, "cpu")


@pytest.mark.usefixtures("two_gpus")
def test_bf16_on_a_gpu_without_bf16_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    with pytest.raises(UnsupportedPrecision, match="bf16"):
        resolve_precision("bf16", "cuda:0")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert resolve_precision("bf16", "cuda:0") == "bf16"


# --------------------------------------------------------------------------- CPU allocator

#: Runs two forward passes of a small DDColor on the CPU in a fresh process and prints the
#: page faults of the second (about 120,000 untuned, under a thousand tuned; every later
#: pass is like it); argv[1] says whether a Colorizer is made first.
_FAULTS = """
import resource, sys
import torch
from ddcolor.build import build_ddcolor
from ddcolor.pipeline import Colorizer
torch.set_num_threads(2)
torch.manual_seed(0)
net = build_ddcolor("ddcolor_paper_tiny")
if sys.argv[1] == "colorizer":
    Colorizer(net, device="cpu", precision="fp32")
rgb = torch.rand(1, 3, 256, 256)
with torch.inference_mode():
    net(rgb)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(rgb)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _FAULTS, mode],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    return int(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt"), reason="not glibc: no mallopt()")
def test_a_cpu_colorizer_keeps_freed_memory_for_the_next_forward_pass() -> None:
    # Page faults are the cost the tuning removes (a fifth of the model time on 2 cores):
    # with glibc's defaults every pass maps, faults in and returns its buffers again.
    untuned, tuned = _faults("bare"), _faults("colorizer")

    assert tuned < untuned / 2, (tuned, untuned)
