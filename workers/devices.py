"""Which devices a worker host has, and how one worker process is pinned to one of them.

``panchro workers`` runs one Celery worker per GPU. The supervising parent never touches
CUDA or ROCm itself: it learns the number of GPUs from a short probe process (this module
run as ``python -m workers.devices``), so the parent neither imports torch (half a
gigabyte of memory) nor initialises a GPU runtime. ``torch.cuda.device_count()`` alone
would not be enough: it asks NVML (or amdsmi) first, but falls back to the CUDA runtime,
which initialises the driver in the calling process, whenever NVML is unavailable.

Each worker then sees exactly one GPU, through the variables its runtime reads:

- NVIDIA: ``CUDA_VISIBLE_DEVICES`` (with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` unless set, so
  that GPU numbers are the ones ``nvidia-smi`` shows);
- AMD ROCm: ``ROCR_VISIBLE_DEVICES`` selects the GPU at the driver level and
  ``HIP_VISIBLE_DEVICES=0`` the only one left, so an inherited HIP list cannot point
  past it.

GPU numbers are those the launcher's own environment makes visible: started with
``CUDA_VISIBLE_DEVICES=2,3``, GPU 0 is the physical GPU 2. Worker node names are
``gpu<N>@<host>``, or ``cpu<N>@<host>`` for CPU workers on a host without a GPU.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from workers.errors import DeviceError

logger = logging.getLogger(__name__)

#: Seconds the probe process (it imports torch and counts GPUs) may take.
PROBE_TIMEOUT_S = 120.0
#: Variable that selects NVIDIA GPUs, a comma-separated list of numbers or UUIDs.
CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"
#: Variable that fixes the numbering of NVIDIA GPUs (``PCI_BUS_ID`` matches nvidia-smi).
CUDA_ORDER = "CUDA_DEVICE_ORDER"
#: Variable that selects AMD GPUs at the HIP level, indexing the ROCr list below.
HIP_VISIBLE = "HIP_VISIBLE_DEVICES"
#: Variable that selects AMD GPUs at the ROCr (driver) level.
ROCR_VISIBLE = "ROCR_VISIBLE_DEVICES"
#: Thread-pool sizes set for each worker (OpenMP, MKL) unless the environment sets them.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
#: Value of ``--devices`` that selects every visible GPU.
ALL_DEVICES = "all"


class Backend(StrEnum):
    """The GPU runtime the installed torch was built for."""

    CUDA = "cuda"
    ROCM = "rocm"
    CPU = "cpu"


@dataclass(frozen=True)
class DeviceInventory:
    """What the probe found: the torch build and the number of GPUs it can see.

    Attributes:
        backend: ``cuda`` or ``rocm`` for GPU builds of torch, ``cpu`` otherwise.
        count: GPUs visible to this process (0 on CPU builds).
        torch_version: The installed torch, e.g. ``2.13.0+cu128``.
        runtime_version: The CUDA or HIP version torch was built with, if any.
    """

    backend: Backend
    count: int
    torch_version: str
    runtime_version: str | None = None

    def describe(self) -> str:
        """One line for logs: ``2 GPUs (cuda 12.8, torch 2.13.0)``."""
        runtime = f"{self.backend.value} {self.runtime_version}, " if self.runtime_version else ""
        plural = "" if self.count == 1 else "s"
        return f"{self.count} GPU{plural} ({runtime}torch {self.torch_version})"


@dataclass(frozen=True)
class WorkerSlot:
    """One worker process to run: the GPU (or CPU share) it owns and its node name.

    Attributes:
        backend: How the device is made visible (``cpu`` for a CPU worker).
        index: The GPU number among the launcher's visible GPUs, or the CPU worker's
            number.
        host: Host name used in the node name.
        threads: CPU threads the worker's math libraries may use, or None to leave
            them at their defaults.
    """

    backend: Backend
    index: int
    host: str
    threads: int | None = None

    @property
    def kind(self) -> str:
        """``gpu`` or ``cpu``, the prefix of the node name."""
        return "cpu" if self.backend is Backend.CPU else "gpu"

    @property
    def node_name(self) -> str:
        """Celery node name of the worker, e.g. ``gpu0@render-07``."""
        return node_name(self.kind, self.index, self.host)

    @property
    def device(self) -> str:
        """Torch device inside the worker: its only visible GPU, or the CPU."""
        return "cpu" if self.backend is Backend.CPU else "cuda:0"


def node_name(kind: str, index: int, host: str | None = None) -> str:
    """Build a worker's Celery node name.

    Args:
        kind: ``gpu`` or ``cpu``.
        index: The GPU or CPU worker number.
        host: Host name; None means this machine's.

    Returns:
        ``<kind><index>@<host>``, e.g. ``gpu1@render-07``.

    Raises:
        ValueError: If ``kind`` is neither ``gpu`` nor ``cpu`` or ``index`` is negative.
    """
    if kind not in ("gpu", "cpu"):
        raise ValueError(f"kind must be gpu or cpu, not {kind!r}")
    if index < 0:
        raise ValueError(f"worker index must not be negative, not {index}")
    return f"{kind}{index}@{host or socket.gethostname()}"


def inventory_from(
    count: int,
    *,
    torch_version: str,
    cuda_version: str | None = None,
    hip_version: str | None = None,
) -> DeviceInventory:
    """Build the inventory from what torch reports.

    Args:
        count: ``torch.cuda.device_count()``.
        torch_version: ``torch.__version__``.
        cuda_version: ``torch.version.cuda`` (None on CPU and ROCm builds).
        hip_version: ``torch.version.hip`` (set on ROCm builds only).

    Returns:
        The inventory; ROCm wins when both versions are set, as in torch itself.
    """
    if hip_version:
        return DeviceInventory(Backend.ROCM, max(count, 0), torch_version, hip_version)
    if cuda_version:
        return DeviceInventory(Backend.CUDA, max(count, 0), torch_version, cuda_version)
    return DeviceInventory(Backend.CPU, 0, torch_version, None)


def describe_torch() -> dict[str, Any]:
    """Report the torch build and its GPU count; this is what the probe process runs.

    Importing torch and counting devices initialises no GPU runtime when NVML (NVIDIA)
    or amdsmi (AMD) answers; the probe runs in its own process in case it does.

    Returns:
        ``{"torch": ..., "cuda": ..., "hip": ..., "count": ...}``, JSON-serialisable.
    """
    import torch

    return {
        "torch": str(torch.__version__),
        "cuda": torch.version.cuda,
        "hip": getattr(torch.version, "hip", None),
        "count": int(torch.cuda.device_count()),
    }


def probe_devices(
    *,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
    timeout: float = PROBE_TIMEOUT_S,
) -> DeviceInventory:
    """Count the GPUs in a short child process, leaving this process free of GPU state.

    Args:
        env: Environment of the probe, which should be the workers' (the visible-device
            variables change the count); None means this process's.
        python: The interpreter to run the probe with.
        timeout: Seconds the probe may take.

    Returns:
        The inventory.

    Raises:
        DeviceError: If the probe fails, times out or prints something unexpected.
    """
    command = [python, "-m", "workers.devices"]
    try:
        done = subprocess.run(
            command,
            env=None if env is None else dict(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise DeviceError(f"device discovery did not finish within {timeout:.0f} s") from exc
    except OSError as exc:
        raise DeviceError(f"cannot run the device probe {python}: {exc}") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise DeviceError(f"device discovery failed with exit code {done.returncode}: {tail[0]}")
    lines = done.stdout.strip().splitlines()
    try:
        report = json.loads(lines[-1])
        inventory = inventory_from(
            int(report["count"]),
            torch_version=str(report["torch"]),
            cuda_version=report.get("cuda"),
            hip_version=report.get("hip"),
        )
    except (IndexError, KeyError, TypeError, ValueError) as exc:
        raise DeviceError(f"device discovery printed no report: {done.stdout[-200:]!r}") from exc
    logger.info("found %s", inventory.describe())
    return inventory


def parse_devices(spec: str, count: int) -> tuple[int, ...]:
    """Turn a ``--devices`` value into GPU numbers.

    Args:
        spec: ``all``, or GPU numbers and ranges separated by commas (``0,1``, ``0-3,6``).
        count: GPUs visible to the launcher.

    Returns:
        The GPU numbers, in the order given.

    Raises:
        DeviceError: If the value is malformed, lists a GPU twice, or names a GPU that
            is not visible; the message says which and what exists.
    """
    text = spec.strip().lower()
    if text == ALL_DEVICES:
        if count == 0:
            raise DeviceError("--devices all: no GPU is visible")
        return tuple(range(count))
    indices: list[int] = []
    for raw in text.split(","):
        part = raw.strip()
        if not part:
            raise DeviceError(f"--devices {spec!r} has an empty entry; write e.g. 0,1 or all")
        first, dash, last = part.partition("-")
        if not first.isdigit() or (dash and not last.isdigit()):
            raise DeviceError(
                f"--devices entry {part!r} is not a GPU number or range; "
                "write e.g. 0,1 or 0-3 or all"
            )
        low, high = int(first), int(last) if dash else int(first)
        if high < low:
            raise DeviceError(f"--devices range {part!r} runs backwards")
        indices.extend(range(low, high + 1))
    seen: set[int] = set()
    for index in indices:
        if index in seen:
            raise DeviceError(f"GPU {index} is listed twice in --devices {spec!r}")
        seen.add(index)
        if index >= count:
            raise DeviceError(f"GPU {index} does not exist: {_visible_summary(count)}")
    return tuple(indices)


def plan_workers(
    inventory: DeviceInventory,
    *,
    devices: str | None = None,
    cpu_workers: int | None = None,
    host: str | None = None,
    cpu_count: int | None = None,
) -> list[WorkerSlot]:
    """Decide which worker processes to run on this host.

    GPUs are always preferred: where the probe finds one, every selected GPU gets a
    worker and ``cpu_workers`` is ignored, so one command line serves a mixed fleet.
    Without a GPU, ``cpu_workers`` CPU workers run, and only when asked for: a CPU
    worker is two orders of magnitude slower than a GPU one.

    Args:
        inventory: What the probe found.
        devices: ``--devices`` (``all`` or a list such as ``0,1``); None means all.
        cpu_workers: Workers to run where there is no GPU; None refuses to run on the CPU.
        host: Host name for the node names; None means this machine's.
        cpu_count: CPU cores shared by the workers; None means those this process may
            use. Each worker's math libraries get an equal share of them.

    Returns:
        The slots, one per worker process.

    Raises:
        DeviceError: If no GPU is visible and no CPU workers were asked for, if GPUs
            were named but none exists, or if the selection is invalid.
    """
    host = host or socket.gethostname()
    cores = cpu_count if cpu_count is not None else _usable_cores()
    if inventory.count > 0:
        indices = parse_devices(devices or ALL_DEVICES, inventory.count)
        if cpu_workers is not None:
            logger.info("GPUs found; --cpu %d applies to hosts without one", cpu_workers)
        threads = max(1, cores // len(indices))
        return [WorkerSlot(inventory.backend, index, host, threads) for index in indices]
    if devices is not None and devices.strip().lower() != ALL_DEVICES:
        raise DeviceError(f"--devices {devices}: {_visible_summary(0, inventory)}")
    if cpu_workers is None:
        raise DeviceError(
            f"{_visible_summary(0, inventory)}; pass --cpu N to run N CPU workers "
            "(far slower than a GPU)"
        )
    if cpu_workers < 1:
        raise DeviceError(f"--cpu must be at least 1, not {cpu_workers}")
    threads = max(1, cores // cpu_workers)
    return [WorkerSlot(Backend.CPU, index, host, threads) for index in range(cpu_workers)]


def child_environment(slot: WorkerSlot, base_env: Mapping[str, str]) -> dict[str, str]:
    """Return the environment of one worker process: only its own GPU visible.

    Args:
        slot: The worker.
        base_env: The launcher's environment; its visible-device variables say which
            physical GPUs the launcher's GPU numbers refer to.

    Returns:
        A copy of ``base_env`` with the device and thread variables of the worker.

    Raises:
        DeviceError: If the slot's GPU is not in the launcher's visible list.
    """
    env = dict(base_env)
    if slot.backend is Backend.CUDA:
        env[CUDA_VISIBLE] = _physical_cuda(base_env, slot.index)
        env.setdefault(CUDA_ORDER, "PCI_BUS_ID")
    elif slot.backend is Backend.ROCM:
        env[ROCR_VISIBLE] = _physical_rocm(base_env, slot.index)
        env[HIP_VISIBLE] = "0"
        # HIP also honours CUDA_VISIBLE_DEVICES; an inherited list must not narrow the one
        # GPU left by ROCR_VISIBLE_DEVICES.
        env.pop(CUDA_VISIBLE, None)
    if slot.threads is not None:
        for name in THREAD_VARIABLES:
            env.setdefault(name, str(slot.threads))
    return env


def _visible_list(value: str | None) -> list[str] | None:
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def _pick(entries: Sequence[str], index: int, variable: str) -> str:
    if index >= len(entries):
        raise DeviceError(f"GPU {index} is not in {variable}={','.join(entries)}")
    return entries[index]


def _physical_cuda(base_env: Mapping[str, str], index: int) -> str:
    visible = _visible_list(base_env.get(CUDA_VISIBLE))
    return str(index) if visible is None else _pick(visible, index, CUDA_VISIBLE)


def _physical_rocm(base_env: Mapping[str, str], index: int) -> str:
    rocr = _visible_list(base_env.get(ROCR_VISIBLE))
    hip_name = HIP_VISIBLE if HIP_VISIBLE in base_env else CUDA_VISIBLE
    hip = _visible_list(base_env.get(hip_name))
    if hip is None:
        return str(index) if rocr is None else _pick(rocr, index, ROCR_VISIBLE)
    entry = _pick(hip, index, hip_name)
    if rocr is not None and entry.isdigit():
        # HIP numbers count within the GPUs that ROCr left visible.
        return _pick(rocr, int(entry), ROCR_VISIBLE)
    return entry


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _visible_summary(count: int, inventory: DeviceInventory | None = None) -> str:
    if count == 0:
        if inventory is not None and inventory.backend is Backend.CPU:
            return f"no GPU is visible (torch {inventory.torch_version} is a CPU-only build)"
        return "no GPU is visible"
    if count == 1:
        return "1 GPU is visible (0)"
    return f"{count} GPUs are visible (0-{count - 1})"


def _main() -> None:
    # The probe protocol: one JSON line on stdout, read by probe_devices().
    sys.stdout.write(json.dumps(describe_torch()) + "\n")


if __name__ == "__main__":
    _main()
