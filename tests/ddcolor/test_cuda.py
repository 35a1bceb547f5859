"""Tests that need a CUDA or ROCm GPU: colour work, the real out-of-memory ladder, precision.

Marked ``cuda`` and skipped, with the reason, where torch sees no GPU. They use no
fixture of a conftest, so ``benchmarks/gpu_check.sh`` runs them with ``--noconftest`` on a
GPU machine that has only torch, numpy and pytest. Run with ``-s`` to see the measurements.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from colour_checks import SHAPES, compare_with_numpy, levels_apart, synthetic_scan
from torch import nn

from ddcolor.build import build_ddcolor
from ddcolor.device import TORCH_DTYPES, describe_device
from ddcolor.pipeline import Colorizer, colorize, network_input
from ddcolor.runners import TorchRunner


def _build() -> str:
    if torch.version.hip:
        return f"ROCm {torch.version.hip}"
    return f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"


#: Why the tests are skipped on this machine, if they are.
NO_GPU = f"no CUDA or ROCm GPU: torch {torch.__version__} ({_build()}) sees none"
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_GPU)]

#: Largest |ab(fp16) - ab(fp32)| allowed, as a fraction of the largest |ab(fp32)|
#: (tests/ddcolor/test_forward.py holds the model to the same).
HALF_TOLERANCE = 0.01
#: The same for bf16, which keeps 8 significant bits against fp16's 11.
BFLOAT16_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def gpu() -> torch.device:
    return torch.device("cuda", 0)


@pytest.fixture(scope="module")
def tiny(gpu: torch.device) -> nn.Module:
    """The tiny DDColor with seeded random weights, on the GPU."""
    torch.manual_seed(0)
    return build_ddcolor("ddcolor_paper_tiny", device=gpu)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("shape", [*SHAPES, (1500, 2000), (1024, 1365, 3)])
def test_colour_work_on_the_gpu_is_within_one_level_of_numpys(
    gpu: torch.device, dtype: type, shape: tuple[int, ...]
) -> None:
    rng = np.random.default_rng(3)
    gaps = compare_with_numpy(synthetic_scan(rng, shape, dtype), 512, gpu, rng)
    print(f"{np.dtype(dtype).name} {shape}: {gaps}")
    assert gaps.pop("input") <= 1e-6 and gaps.pop("light") <= 1e-4
    assert max(gaps.values()) <= 1, gaps


def test_colorizer_on_a_gpu_composes_there_by_default(tiny: nn.Module, gpu: torch.device) -> None:
    image = synthetic_scan(np.random.default_rng(4), (480, 640), np.uint8)
    colorizer = Colorizer(tiny, device=gpu, size=512, precision="fp32")
    on_device = colorizer.colorize(image)
    colorizer.colour_ops = "numpy"
    on_host = colorizer.colorize(image)
    assert on_device.device == str(describe_device(gpu))
    assert levels_apart(on_device.image, on_host.image) <= 1


def _reserved_peak(runner: TorchRunner, size: int) -> int:
    """Bytes the allocator holds at the peak of one fp32 forward at ``size``."""
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    runner.predict(torch.rand(1, 3, size, size, device=runner.device), "fp32")
    torch.cuda.synchronize()
    return int(torch.cuda.max_memory_reserved())


def test_real_out_of_memory_steps_down_the_ladder(tiny: nn.Module, gpu: torch.device) -> None:
    runner = TorchRunner(tiny, gpu)
    peak_512, peak_768 = _reserved_peak(runner, 512), _reserved_peak(runner, 768)
    assert peak_768 > peak_512
    total = torch.cuda.get_device_properties(gpu).total_memory
    limit = (peak_512 + peak_768) // 2  # room for 512 px, not for 768 or 1024
    image = synthetic_scan(np.random.default_rng(5), (200, 260), np.uint8)
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(limit / total, gpu)
    try:
        result = colorize(tiny, image, size=1024, precision="fp32", device=gpu)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, gpu)
        torch.cuda.empty_cache()
    print(f"peaks 512/768 px: {peak_512 >> 20}/{peak_768 >> 20} MiB, limit {limit >> 20} MiB")
    assert result.sizes_tried == (1024, 768, 512)
    assert result.size == 512


@pytest.mark.parametrize(
    ("precision", "tolerance"), [("fp16", HALF_TOLERANCE), ("bf16", BFLOAT16_TOLERANCE)]
)
def test_reduced_precision_ab_stays_close_to_fp32(
    tiny: nn.Module, gpu: torch.device, precision: str, tolerance: float
) -> None:
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name(gpu)} has no bf16")
    image = synthetic_scan(np.random.default_rng(6), (512, 683), np.uint8)
    x, _ = network_input(image, 512, "opencv")
    x = x.to(gpu)
    with torch.inference_mode():
        reference = tiny(x).float()
        with torch.autocast("cuda", dtype=TORCH_DTYPES[precision]):
            reduced = tiny(x).float()
    gap = float((reduced - reference).abs().max())
    scale = float(reference.abs().max())
    print(f"{precision}: max |ab - ab(fp32)| {gap:.4f} of max |ab| {scale:.4f}")
    assert torch.isfinite(reduced).all()
    assert gap <= tolerance * scale
