"""A worker pinned to one GPU sees that GPU and no other (needs a CUDA or ROCm GPU).

Marked ``cuda`` and skipped, with the reason, where torch sees no GPU. Each check starts a
fresh Python process with the environment the launcher gives a worker
(``workers.devices.child_environment``); where the worker's dependencies are not installed
(a bare GPU machine running ``benchmarks/gpu_check.sh`` with ``--noconftest``), with the
CUDA_VISIBLE_DEVICES it would set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason=f"no CUDA or ROCm GPU: torch {torch.__version__} sees none",
    ),
]

#: The checkout, put on the children's path so that they import its ddcolor.
REPO_ROOT = Path(__file__).resolve().parents[2]
#: Seconds a child process may take to import torch and look at its GPUs.
CHILD_TIMEOUT_S = 120
#: What a pinned child reports: the GPUs it sees, by UUID, and whether cuda:1 is refused.
_PROBE = """
import json, torch
from ddcolor.device import resolve_device
from ddcolor.errors import DDColorError
def identity(index):
    props = torch.cuda.get_device_properties(index)
    return str(getattr(props, "uuid", f"{props.name}, {props.total_memory} bytes"))
seen = [identity(i) for i in range(torch.cuda.device_count())]
try:
    resolve_device("cuda:1")
    refused = False
except DDColorError:
    refused = True
print(json.dumps({"uuids": seen, "cuda1_refused": refused}))
"""


def _worker_environment(index: int) -> tuple[dict[str, str], str]:
    """The environment of the worker of GPU ``index``, and where it came from."""
    try:
        from workers.devices import Backend, WorkerSlot, child_environment
    except ImportError:  # the bare GPU machine of gpu_check.sh: no Celery installed
        backend = "HIP_VISIBLE_DEVICES" if torch.version.hip else "CUDA_VISIBLE_DEVICES"
        return {**os.environ, backend: str(index)}, f"{backend}={index} set by the test"
    kind = Backend.ROCM if torch.version.hip else Backend.CUDA
    env = child_environment(WorkerSlot(kind, index, "test-host"), os.environ)
    return env, "workers.devices.child_environment"


def _probe(env: dict[str, str]) -> dict[str, object]:
    path = [str(REPO_ROOT), env.get("PYTHONPATH", "")]
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, path))}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        check=True,
    )
    report: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_each_worker_sees_only_its_own_gpu() -> None:
    uuids = [
        str(torch.cuda.get_device_properties(i).uuid) for i in range(torch.cuda.device_count())
    ]
    for index, uuid in enumerate(uuids):
        env, source = _worker_environment(index)
        report = _probe(env)
        print(f"GPU {index} ({uuid}) pinned by {source}: the worker sees {report['uuids']}")
        assert report["uuids"] == [uuid]
        assert report["cuda1_refused"] is True


def test_a_worker_with_no_visible_gpu_sees_none() -> None:
    hidden = "HIP_VISIBLE_DEVICES" if torch.version.hip else "CUDA_VISIBLE_DEVICES"
    report = _probe({**os.environ, hidden: "-1"})
    assert report["uuids"] == []
