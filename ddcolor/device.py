"""Choosing the device and the numeric precision DDColor runs with.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023; upstream github.com/piddnad/DDColor, weights under the Apache-2.0 licence) is run on
an NVIDIA GPU (CUDA), an AMD GPU (ROCm) or the CPU. ROCm builds of PyTorch expose AMD GPUs
through the ``torch.cuda`` API and device type ``cuda``; they are told apart by
``torch.version.hip``.

Precision ``auto`` means fp16 on GPUs (half the memory, about twice the speed; the network keeps
normalisation and softmax in float32). On the CPU it means bf16 where the processor computes
bf16 natively (AVX512-BF16 or AMX: 16 to 41 % less CPU time) and fp32 elsewhere (emulated bf16
is dozens of times slower); the measurements are in the comments of the constants.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import platform
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from ddcolor.errors import DDColorError, UnsupportedPrecision
from ddcolor.registry import PRECISION_CHOICES

logger = logging.getLogger(__name__)

Backend = Literal["cuda", "rocm", "cpu"]

#: Torch dtype of each precision.
TORCH_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
#: What ``auto`` means on CUDA and ROCm GPUs.
GPU_AUTO_PRECISION = "fp16"
#: What ``auto`` means on CPUs that compute bf16 natively (AVX512-BF16 or AMX). Measured on an
#: AMD EPYC with AVX512-BF16, one thread, random weights, CPU seconds per forward, fp32 / bf16
#: autocast: tiny 256 px 1.14 / 0.84, tiny 512 px 4.6 / 3.9, large 256 px 2.0 / 1.0, large
#: 512 px 8.3 / 4.9; bf16 moved ab by at most 0.8 % of its range. fp16 autocast took 136 s
#: (tiny, 256 px): never automatic.
CPU_NATIVE_BF16_AUTO_PRECISION = "bf16"
#: What ``auto`` means on other CPUs: the same machine with oneDNN held to AVX2 (bf16 emulated)
#: took 58 s in bf16 against 1.0 s in fp32 (tiny, 256 px).
CPU_AUTO_PRECISION = "fp32"
#: glibc's mallopt() parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
#: Allocations up to this size come from the heap and are reused, instead of being mapped
#: and unmapped on every call: glibc's largest allowed value on 64-bit systems.
CPU_MMAP_THRESHOLD = 32 << 20
#: Extra memory glibc asks for whenever a heap grows, and keeps when it shrinks. A forward
#: pass allocates and frees gigabytes in blocks of a few MB, mostly in the math library's
#: threads, whose heaps glibc otherwise gives back and faults in again on every call.
#: Measured (tiny model, 12 scans at 512 px, 2 threads): 26.4 s of model time with
#: glibc's defaults, 14 s of it in the kernel (7.5 million page faults); 20.7 s with these
#: settings (2.3 million), for 1.7 GB of peak memory instead of 1.3 GB.
CPU_TOP_PAD = 1 << 30
#: Device names accepted by :func:`resolve_device`, besides ``cuda:N``.
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda")
#: Where Linux describes the processor.
_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class DeviceInfo:
    """What a device is, for logs and provenance.

    Attributes:
        backend: ``cuda`` (NVIDIA), ``rocm`` (AMD through HIP) or ``cpu``.
        name: Marketing name of the GPU, or the processor's model name.
        index: GPU index as PyTorch numbers it (after ``CUDA_VISIBLE_DEVICES`` or
            ``HIP_VISIBLE_DEVICES``), or None for the CPU.
    """

    backend: Backend
    name: str
    index: int | None

    def __str__(self) -> str:
        """Render as ``rocm:0 (AMD Instinct MI250X)`` or ``cpu (AMD EPYC)``."""
        where = self.backend if self.index is None else f"{self.backend}:{self.index}"
        return f"{where} ({self.name})"


def gpu_backend() -> Backend:
    """Name the GPU backend PyTorch was built for.

    Returns:
        ``rocm`` on ROCm (HIP) builds, otherwise ``cuda`` (also on CPU-only builds).
    """
    return "rocm" if getattr(torch.version, "hip", None) else "cuda"


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn a device name into a ``torch.device`` that exists here.

    Args:
        spec: ``auto`` (the first GPU, else the CPU), ``cpu``, ``cuda`` (GPU 0) or ``cuda:N``.
            ROCm GPUs are also addressed as ``cuda``.

    Returns:
        The device, with an explicit index for GPUs.

    Raises:
        DDColorError: If the name is not one of the above, or names a GPU that PyTorch does
            not see.
    """
    text = str(spec).strip().lower()
    if text == "auto":
        device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")
        logger.debug("device auto resolved to %s", device)
        return device
    if text == "cpu":
        return torch.device("cpu")
    match = re.fullmatch(r"cuda(?::(\d+))?", text)
    if match is None:
        raise DDColorError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")
    index = int(match.group(1) or 0)
    if not torch.cuda.is_available():
        build = f"ROCm {torch.version.hip}" if gpu_backend() == "rocm" else _cuda_build()
        raise DDColorError(
            f"device {spec!r} requested but PyTorch sees no GPU ({build}); "
            "check the driver and CUDA_VISIBLE_DEVICES/HIP_VISIBLE_DEVICES, or use --device cpu"
        )
    count = torch.cuda.device_count()
    if index >= count:
        raise DDColorError(
            f"device {spec!r} requested but PyTorch sees {count} GPU(s), numbered 0 to {count - 1}"
        )
    return torch.device("cuda", index)


def _cuda_build() -> str:
    version = torch.version.cuda
    return f"CUDA {version} build" if version else "a CPU-only build of PyTorch"


def describe_device(device: str | torch.device) -> DeviceInfo:
    """Say which backend and hardware a device is.

    Args:
        device: A ``torch.device`` or its name (``cpu``, ``cuda:1``).

    Returns:
        The backend, the hardware's name and the GPU index.

    Raises:
        DDColorError: For device types other than ``cpu`` and ``cuda``.
    """
    device = torch.device(device)
    if device.type == "cpu":
        return DeviceInfo(backend="cpu", name=_cpu_name(), index=None)
    if device.type != "cuda":
        raise DDColorError(f"unsupported device type {device.type!r}; use cpu or cuda")
    index = device.index if device.index is not None else torch.cuda.current_device()
    return DeviceInfo(backend=gpu_backend(), name=torch.cuda.get_device_name(index), index=index)


@functools.cache
def _cpu_name() -> str:
    """The processor's model name, from /proc/cpuinfo where it exists."""
    try:
        for line in _CPUINFO.read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_has_native_bf16() -> bool:
    """Say whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles), as oneDNN uses.

    Returns:
        True if PyTorch reports either instruction set.
    """
    # torch.cpu only offers these checks as private functions; a missing one counts as absent.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """Decide the precision to run in on a device.

    Args:
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
        device: The device the model runs on.

    Returns:
        ``fp32``, ``fp16`` or ``bf16``: ``auto`` becomes :data:`GPU_AUTO_PRECISION` on GPUs,
        :data:`CPU_NATIVE_BF16_AUTO_PRECISION` on CPUs with native bf16 and
        :data:`CPU_AUTO_PRECISION` on other CPUs.

    Raises:
        UnsupportedPrecision: For other names, or bf16 on a GPU without bf16 support.
    """
    name = precision.strip().lower()
    if name not in PRECISION_CHOICES:
        raise UnsupportedPrecision(
            f"unsupported precision {precision!r}; use one of {', '.join(PRECISION_CHOICES)}"
        )
    device = torch.device(device)
    on_gpu = device.type == "cuda"
    if name == "auto":
        if on_gpu:
            name = GPU_AUTO_PRECISION
        else:
            native = cpu_has_native_bf16()
            name = CPU_NATIVE_BF16_AUTO_PRECISION if native else CPU_AUTO_PRECISION
    elif name == "bf16" and on_gpu and not torch.cuda.is_bf16_supported():
        raise UnsupportedPrecision(f"bf16 requested but {describe_device(device)} lacks it")
    elif name == "fp16" and not on_gpu:
        logger.warning("fp16 on the CPU is about 100 times slower than fp32")
    logger.debug("precision %s resolved to %s on %s", precision, name, device)
    return name


@functools.cache
def tune_cpu_allocator() -> bool:
    """Make glibc keep the memory a forward pass on the CPU frees, for the next one.

    Applies :data:`CPU_MMAP_THRESHOLD` and :data:`CPU_TOP_PAD` and turns off returning
    free heap memory to the system, once per process. The process keeps its peak memory
    between images in exchange for about a fifth less model time. A :class:`Colorizer` on
    the CPU calls it; elsewhere than on glibc it does nothing.

    Returns:
        Whether the settings were applied.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        logger.debug("no glibc mallopt(): the CPU allocator keeps its defaults")
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = all(
        mallopt(param, value) == 1
        for param, value in (
            (_M_MMAP_THRESHOLD, CPU_MMAP_THRESHOLD),
            (_M_TOP_PAD, CPU_TOP_PAD),
            # -1 is SIZE_MAX to glibc: free memory is never handed back.
            (_M_TRIM_THRESHOLD, -1),
        )
    )
    logger.debug("CPU allocator tuned for repeated forward passes: %s", applied)
    return applied
