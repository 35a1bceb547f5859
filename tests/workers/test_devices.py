"""Device discovery, ``--devices`` parsing and one worker's environment, by injection.

No test needs a GPU: counts and torch versions are given, and the one probe that runs for
real reports this machine's build.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from workers.devices import (
    Backend,
    DeviceError,
    DeviceInventory,
    WorkerSlot,
    child_environment,
    inventory_from,
    node_name,
    parse_devices,
    plan_workers,
    probe_devices,
)

CUDA_2 = inventory_from(2, torch_version="2.13.0+cu128", cuda_version="12.8")
ROCM_4 = inventory_from(4, torch_version="2.13.0+rocm6.4", hip_version="6.4.43482")
CPU_ONLY = inventory_from(0, torch_version="2.13.0+cpu")


def test_inventory_is_rocm_when_torch_reports_a_hip_version() -> None:
    inventory = inventory_from(
        2, torch_version="2.13.0+rocm6.4", cuda_version=None, hip_version="6.4"
    )

    assert inventory.backend is Backend.ROCM
    assert inventory.count == 2
    assert inventory.runtime_version == "6.4"


def test_inventory_is_cuda_when_torch_reports_only_a_cuda_version() -> None:
    assert CUDA_2.backend is Backend.CUDA
    assert CUDA_2.describe() == "2 GPUs (cuda 12.8, torch 2.13.0+cu128)"


def test_inventory_of_a_cpu_build_has_no_gpu_whatever_the_count() -> None:
    inventory = inventory_from(3, torch_version="2.13.0+cpu")

    assert inventory == DeviceInventory(Backend.CPU, 0, "2.13.0+cpu", None)


def test_node_name_puts_kind_and_number_before_the_host() -> None:
    assert node_name("gpu", 1, "render-07") == "gpu1@render-07"
    assert node_name("cpu", 0, "laptop") == "cpu0@laptop"


def test_node_name_rejects_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="gpu or cpu"):
        node_name("tpu", 0, "host")


def test_parse_devices_all_selects_every_visible_gpu() -> None:
    assert parse_devices("all", 3) == (0, 1, 2)
    assert parse_devices(" ALL ", 1) == (0,)


def test_parse_devices_reads_numbers_and_ranges_in_the_given_order() -> None:
    assert parse_devices("3,0-1", 4) == (3, 0, 1)
    assert parse_devices(" 1 , 2 ", 4) == (1, 2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("0,,1", "empty entry"),
        ("", "empty entry"),
        ("gpu0", "not a GPU number"),
        ("-1", "not a GPU number"),
        ("0-", "not a GPU number"),
        ("2-1", "runs backwards"),
        ("0,1,0", "GPU 0 is listed twice"),
        ("0-1,1", "GPU 1 is listed twice"),
        ("2", r"GPU 2 does not exist: 2 GPUs are visible \(0-1\)"),
    ],
)
def test_parse_devices_explains_what_is_wrong(spec: str, message: str) -> None:
    with pytest.raises(DeviceError, match=message):
        parse_devices(spec, 2)


def test_parse_devices_all_fails_when_no_gpu_is_visible() -> None:
    with pytest.raises(DeviceError, match="no GPU is visible"):
        parse_devices("all", 0)


def test_plan_gives_every_gpu_a_worker_named_after_it() -> None:
    slots = plan_workers(CUDA_2, host="render-07", cpu_count=16)

    assert [slot.node_name for slot in slots] == ["gpu0@render-07", "gpu1@render-07"]
    assert [slot.device for slot in slots] == ["cuda:0", "cuda:0"]
    assert {slot.threads for slot in slots} == {8}


def test_plan_runs_only_the_selected_gpus() -> None:
    slots = plan_workers(ROCM_4, devices="1,3", host="h", cpu_count=4)

    assert [(slot.backend, slot.index) for slot in slots] == [(Backend.ROCM, 1), (Backend.ROCM, 3)]


def test_plan_ignores_cpu_workers_where_there_is_a_gpu() -> None:
    slots = plan_workers(CUDA_2, cpu_workers=4, host="h", cpu_count=2)

    assert [slot.kind for slot in slots] == ["gpu", "gpu"]


def test_plan_refuses_to_run_on_the_cpu_unless_asked() -> None:
    with pytest.raises(DeviceError, match=r"CPU-only build.*--cpu N"):
        plan_workers(CPU_ONLY, host="h")


def test_plan_starts_the_requested_cpu_workers_where_there_is_no_gpu() -> None:
    slots = plan_workers(CPU_ONLY, cpu_workers=3, host="laptop", cpu_count=8)

    assert [slot.node_name for slot in slots] == ["cpu0@laptop", "cpu1@laptop", "cpu2@laptop"]
    assert [slot.device for slot in slots] == ["cpu"] * 3
    assert {slot.threads for slot in slots} == {2}


def test_plan_gives_each_worker_at_least_one_thread() -> None:
    slots = plan_workers(CPU_ONLY, cpu_workers=4, host="h", cpu_count=2)

    assert {slot.threads for slot in slots} == {1}


def test_plan_fails_when_named_gpus_do_not_exist() -> None:
    with pytest.raises(DeviceError, match="--devices 0,1: no GPU is visible"):
        plan_workers(CPU_ONLY, devices="0,1", cpu_workers=2, host="h")


def test_plan_rejects_zero_cpu_workers() -> None:
    with pytest.raises(DeviceError, match="at least 1"):
        plan_workers(CPU_ONLY, cpu_workers=0, host="h")


def test_cuda_worker_sees_only_its_gpu_in_pci_order() -> None:
    slot = WorkerSlot(Backend.CUDA, 1, "h")
    base = {"PATH": "/usr/bin"}

    env = child_environment(slot, base)

    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert env["PATH"] == "/usr/bin"
    assert base == {"PATH": "/usr/bin"}


def test_cuda_worker_numbers_index_the_launchers_visible_gpus() -> None:
    base = {"CUDA_VISIBLE_DEVICES": "2,3", "CUDA_DEVICE_ORDER": "FASTEST_FIRST"}

    env = child_environment(WorkerSlot(Backend.CUDA, 1, "h"), base)

    assert env["CUDA_VISIBLE_DEVICES"] == "3"
    assert env["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"


def test_cuda_worker_keeps_a_gpu_uuid_from_the_launchers_list() -> None:
    base = {"CUDA_VISIBLE_DEVICES": "GPU-aaaa, GPU-bbbb"}

    env = child_environment(WorkerSlot(Backend.CUDA, 1, "h"), base)

    assert env["CUDA_VISIBLE_DEVICES"] == "GPU-bbbb"


def test_cuda_worker_outside_the_launchers_list_is_an_error() -> None:
    with pytest.raises(DeviceError, match="GPU 2 is not in CUDA_VISIBLE_DEVICES=0,1"):
        child_environment(WorkerSlot(Backend.CUDA, 2, "h"), {"CUDA_VISIBLE_DEVICES": "0,1"})


def test_rocm_worker_selects_its_gpu_through_rocr_and_the_only_hip_device() -> None:
    base = {"CUDA_VISIBLE_DEVICES": "0,1,2,3", "HIP_VISIBLE_DEVICES": "0,1,2,3"}

    env = child_environment(WorkerSlot(Backend.ROCM, 2, "h"), {"PATH": "/bin"})
    inherited = child_environment(WorkerSlot(Backend.ROCM, 2, "h"), base)

    assert (env["ROCR_VISIBLE_DEVICES"], env["HIP_VISIBLE_DEVICES"]) == ("2", "0")
    assert "CUDA_VISIBLE_DEVICES" not in env
    assert (inherited["ROCR_VISIBLE_DEVICES"], inherited["HIP_VISIBLE_DEVICES"]) == ("2", "0")
    assert "CUDA_VISIBLE_DEVICES" not in inherited


def test_rocm_worker_numbers_go_through_hip_then_rocr_lists() -> None:
    base = {"ROCR_VISIBLE_DEVICES": "4,5,6,7", "HIP_VISIBLE_DEVICES": "3,1"}

    env = child_environment(WorkerSlot(Backend.ROCM, 0, "h"), base)

    assert env["ROCR_VISIBLE_DEVICES"] == "7"
    assert env["HIP_VISIBLE_DEVICES"] == "0"


def test_rocm_worker_numbers_index_the_launchers_rocr_list() -> None:
    env = child_environment(WorkerSlot(Backend.ROCM, 1, "h"), {"ROCR_VISIBLE_DEVICES": "2,5"})

    assert env["ROCR_VISIBLE_DEVICES"] == "5"


def test_worker_threads_are_set_unless_the_environment_sets_them() -> None:
    slot = WorkerSlot(Backend.CPU, 0, "h", threads=3)

    env = child_environment(slot, {"MKL_NUM_THREADS": "1"})

    assert env["OMP_NUM_THREADS"] == "3"
    assert env["MKL_NUM_THREADS"] == "1"
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_probe_reports_this_machines_torch_without_importing_torch_itself() -> None:
    script = (
        "import json, sys\n"
        "from workers.devices import probe_devices\n"
        "inventory = probe_devices()\n"
        "print(json.dumps({'backend': inventory.backend.value, 'count': inventory.count,\n"
        "                  'version': inventory.torch_version,\n"
        "                  'torch_imported': 'torch' in sys.modules}))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=180
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])

    import torch

    assert report["version"] == torch.__version__
    assert (
        report["backend"]
        == inventory_from(
            torch.cuda.device_count(),
            torch_version=torch.__version__,
            cuda_version=torch.version.cuda,
            hip_version=torch.version.hip,
        ).backend.value
    )
    assert report["torch_imported"] is False


def _fake_python(tmp_path: Path, body: str) -> str:
    path = tmp_path / "python"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_probe_failure_is_reported_with_its_last_error_line(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, "echo 'ImportError: libcudart.so.12' >&2; exit 3")

    with pytest.raises(DeviceError, match=r"exit code 3: ImportError: libcudart\.so\.12"):
        probe_devices(python=python)


def test_probe_output_that_is_not_a_report_is_an_error(tmp_path: Path) -> None:
    python = _fake_python(tmp_path, "echo 'warming up'")

    with pytest.raises(DeviceError, match="printed no report"):
        probe_devices(python=python)


def test_probe_reads_the_last_line_as_its_report(tmp_path: Path) -> None:
    report = json.dumps({"torch": "2.13.0+cu128", "cuda": "12.8", "hip": None, "count": 4})
    python = _fake_python(tmp_path, f"echo 'a warning'; echo '{report}'")

    assert probe_devices(python=python) == DeviceInventory(Backend.CUDA, 4, "2.13.0+cu128", "12.8")
