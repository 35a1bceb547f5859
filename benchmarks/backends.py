"""Images per second of the network under each backend, and how far each is from eager fp32.

For each architecture (tiny, large) a checkpoint of seeded random weights in the official
layout is written to a temporary folder and loaded as the pipeline loads one; then the same
512 px grey input (a synthetic scan, through the pipeline's own ``network_input``) is run
by torch eager in fp32 and in bf16 (autocast), by the network prepared for inference
(``ddcolor.prepared``: what a CPU colorizer runs, bf16 being what ``auto`` means on CPUs
with native bf16) in fp32 and bf16, and by ONNX Runtime in fp32 (the export is timed
apart, and cached beside the checkpoint as in production). Each cell is one warm-up pass,
then ``--repeat`` timed passes; the median is reported. |d ab| is the largest absolute
difference of the predicted ab from torch eager fp32's, beside the largest |ab| it predicted
(random weights predict small ab; trained ones span about -128..127). Both runtimes get the
same number of threads. The export time includes opening the ONNX Runtime session.

On a CPU without native bf16 (no AVX512-BF16 nor AMX) bf16 is emulated and dozens of times
slower (``ddcolor.device``): that cell is skipped unless ``--emulated-bf16`` is given.

Usage::

    python benchmarks/backends.py                          # tiny and large at 512 px
    python benchmarks/backends.py --arch tiny --size 256 --repeat 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ddcolor.build import build_ddcolor
from ddcolor.checkpoints import read_checkpoint
from ddcolor.device import cpu_has_native_bf16, tune_cpu_allocator
from ddcolor.onnx_runner import load_onnx_runner
from ddcolor.pipeline import network_input
from ddcolor.runners import TorchRunner

#: Registry name benchmarked for each architecture.
ARCH_MODELS = {"tiny": "ddcolor_paper_tiny", "large": "ddcolor_modelscope"}
#: Seed of the weights and of the scan.
SEED = 0


def _timed(predict: Callable[[], torch.Tensor], repeat: int) -> tuple[float, torch.Tensor]:
    """Median seconds of ``repeat`` passes after one warm-up, and the last output."""
    out = predict()
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        out = predict()
        times.append(time.perf_counter() - began)
    return statistics.median(times), out


def _bench_arch(arch: str, size: int, repeat: int, bf16: bool) -> list[tuple[str, ...]]:
    model_name = ARCH_MODELS[arch]
    rng = np.random.default_rng(SEED)
    scan = rng.integers(0, 256, (size * 3 // 2, size), dtype=np.uint8)
    x, _ = network_input(scan, size, "opencv")
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{model_name}.pth"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            torch.save(build_ddcolor(model_name).state_dict(), path)
        state_dict, info = read_checkpoint(path)
        net = build_ddcolor(info.arch, state_dict=state_dict)
        eager = TorchRunner(net, prepared=False)
        seconds, reference = _timed(lambda: eager.predict(x, "fp32")[0], repeat)
        span = f"{float(reference.abs().max()):.3g}"
        rows.append((arch, "torch", "fp32", f"{1 / seconds:.3f}", f"{seconds:.2f}", "0", span, "-"))
        prepared = TorchRunner(net)
        cells = [("torch prepared", prepared, "fp32")]
        if bf16:
            cells += [("torch", eager, "bf16"), ("torch prepared", prepared, "bf16")]
        else:
            rows.append((arch, "torch", "bf16", "skipped: emulated bf16", "", "", "", ""))
        for backend, runner, precision in cells:
            seconds, ab = _timed(lambda r=runner, p=precision: r.predict(x, p)[0], repeat)
            diff = f"{float((ab - reference).abs().max()):.3g}"
            rows.append(
                (arch, backend, precision, f"{1 / seconds:.3f}", f"{seconds:.2f}", diff, span, "-")
            )
        began = time.perf_counter()
        onnx_runner = load_onnx_runner(net, model_name=model_name, checkpoint=info)
        export = time.perf_counter() - began
        seconds, ab = _timed(lambda: onnx_runner.predict(x, "fp32")[0], repeat)
        diff = float((ab - reference).abs().max())
        rows.append(
            (
                arch,
                "onnx",
                "fp32",
                f"{1 / seconds:.3f}",
                f"{seconds:.2f}",
                f"{diff:.3g}",
                span,
                f"{export:.0f}",
            )
        )
    return rows


def main() -> None:
    """Print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=sorted(ARCH_MODELS))
    parser.add_argument("--size", type=int, default=512, help="square input size, pixels")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per cell")
    parser.add_argument("--emulated-bf16", action="store_true", help="time bf16 anyway")
    args = parser.parse_args()
    tune_cpu_allocator()  # as every Colorizer on the CPU does
    bf16 = cpu_has_native_bf16() or args.emulated_bf16
    print(
        f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, native bf16: {cpu_has_native_bf16()}, "
        f"{args.size} px, batch 1, median of {args.repeat}"
    )
    header = (
        "arch",
        "backend",
        "precision",
        "images/s",
        "s/image",
        "max |d ab|",
        "max |ab|",
        "export s",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for arch in args.arch or ["tiny", "large"]:
        for row in _bench_arch(arch, args.size, args.repeat, bf16):
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
