"""Forward-pass speed and peak memory of DDColor by configuration, input size and precision.

Each cell runs in a fresh child process, so that its peak memory is its own: the peak
resident set size of the process on the CPU, ``torch.cuda.max_memory_allocated`` on a
GPU. Weights are random (speed and memory do not depend on their values). On the CPU the
allocator is tuned as the pipeline tunes it (``ddcolor.device.tune_cpu_allocator``).

Usage::

    python benchmarks/model.py                       # tiny and large, 256/512/1024, fp32 and bf16
    python benchmarks/model.py --arch tiny --size 512 --precision fp32 --precision bf16
    python benchmarks/model.py --device cuda:0 --repeat 10
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

#: Registry name benchmarked for each architecture.
ARCH_MODELS = {"tiny": "ddcolor_paper_tiny", "large": "ddcolor_modelscope"}
#: Input sizes (pixels, square) measured by default.
DEFAULT_SIZES = (256, 512, 1024)
#: Precisions measured by default.
DEFAULT_PRECISIONS = ("fp32", "bf16", "fp16")


def _measure(
    arch: str, size: int, precision: str, device_name: str, repeat: int
) -> dict[str, object]:
    import torch

    from ddcolor.build import build_ddcolor
    from ddcolor.device import TORCH_DTYPES, tune_cpu_allocator

    torch.manual_seed(0)
    device = torch.device(device_name)
    if device.type == "cpu":
        tune_cpu_allocator()  # as every Colorizer on the CPU does
    model = build_ddcolor(ARCH_MODELS[arch], device=device)
    x = torch.rand(1, 3, size, size, device=device)
    times: list[float] = []
    with torch.inference_mode():
        for index in range(repeat + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            if precision == "fp32":
                out = model(x)
            else:  # the pipeline's way: autocast, normalisation and softmax kept in fp32
                with torch.autocast(device_type=device.type, dtype=TORCH_DTYPES[precision]):
                    out = model(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if index:  # the first pass warms caches and allocators up
                times.append(time.perf_counter() - start)
    finite = bool(torch.isfinite(out.float()).all())
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        kind = "cuda allocated"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        kind = "process RSS"
    return {
        "arch": arch,
        "size": size,
        "precision": precision,
        "median_s": statistics.median(times),
        "peak_mib": peak,
        "memory": kind,
        "finite": finite,
    }


def _machine(device_name: str) -> str:
    import torch

    from ddcolor.device import describe_device

    info = describe_device(device_name)
    threads = torch.get_num_threads()
    return (
        f"{info}, {os.cpu_count()} logical CPUs, torch {torch.__version__} "
        f"({threads} threads), Python {platform.python_version()}"
    )


def _default_precisions(device: str) -> tuple[str, ...]:
    """All precisions on a GPU; on the CPU fp16 only when asked for by name.

    CPU fp16 runs on fallback kernels, roughly 100x slower than fp32 (136 s for the tiny
    model at 256 px here), which would make the default table take hours.
    """
    if device.startswith("cuda"):
        return DEFAULT_PRECISIONS
    return tuple(p for p in DEFAULT_PRECISIONS if p != "fp16")


def main() -> None:
    """Run every requested cell in a child process and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=sorted(ARCH_MODELS))
    parser.add_argument("--size", action="append", type=int)
    parser.add_argument("--precision", action="append", choices=DEFAULT_PRECISIONS)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes after one warm-up")
    parser.add_argument(
        "--cell", nargs=3, metavar=("ARCH", "SIZE", "PRECISION"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.cell:
        arch, size, precision = args.cell
        print(json.dumps(_measure(arch, int(size), precision, args.device, args.repeat)))
        return

    print(f"machine: {_machine(args.device)}")
    header = f"{'model':<6} {'size':>5} {'precision':<9} {'median s':>9} {'peak MiB':>9}  finite"
    print(header)
    print("-" * len(header))
    for arch in args.arch or sorted(ARCH_MODELS, reverse=True):
        for size in args.size or DEFAULT_SIZES:
            for precision in args.precision or _default_precisions(args.device):
                command = [
                    sys.executable,
                    __file__,
                    "--device",
                    args.device,
                    "--repeat",
                    str(args.repeat),
                    "--cell",
                    arch,
                    str(size),
                    precision,
                ]
                done = subprocess.run(command, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    reason = (done.stderr.strip().splitlines() or ["failed"])[-1]
                    print(f"{arch:<6} {size:>5} {precision:<9} {'error':>9}  {reason}")
                    continue
                cell = json.loads(done.stdout.strip().splitlines()[-1])
                print(
                    f"{arch:<6} {size:>5} {precision:<9} {cell['median_s']:>9.3f} "
                    f"{cell['peak_mib']:>9.0f}  {cell['finite']}",
                    flush=True,
                )
    print("peak memory: process RSS on the CPU, torch.cuda.max_memory_allocated on a GPU")


if __name__ == "__main__":
    main()
