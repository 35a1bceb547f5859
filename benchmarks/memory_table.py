"""Computed device memory of a DDColor forward pass, and the largest input size per GPU class.

COMPUTED, NOT MEASURED ON A GPU. No GPU was available where this table was made, so the
forward pass runs on PyTorch's ``meta`` device: every operation computes the shape and
type of its result but holds no data, so the whole table takes seconds on any machine. A
dispatch mode adds up the bytes of the tensors that are alive after each operation, as
the model runs under ``torch.inference_mode()`` (the pipeline's mode: intermediate results
are freed as soon as nothing refers to them), and keeps the peak.

Precision: the network stays float32 and fp16/bf16 come from autocast, as in the
pipeline. Autocast does not run on the meta device, so it is simulated: convolutions and
matrix products produce 16-bit results (and make a transient 16-bit copy of each 32-bit
input), layer norms and softmax produce 32-bit results, and every other operation takes
the widest of its inputs. Autocast also keeps a 16-bit copy of every weight while the
forward runs: half the parameters' bytes are added.

What the numbers leave out, and the margin that stands for it in the GPU table: the CUDA
or ROCm context and the kernels' workspaces (about 0.5-1 GiB, :data:`CONTEXT_GIB`), the
caching allocator's fragmentation (:data:`FRAGMENTATION`), and the pipeline's work
outside the network, which scales with the original image, not the input size (the
original's L channel and the ab upsampled to it). ``benchmarks/model.py --device cuda:0``
measures the real figure on a GPU; on the CPU its peak resident memory for the large
model at 1024 px in fp32 (5,359 MiB, docs/performance.md) is this script's 4,226 MiB
plus the Python process and allocator.

Usage::

    python benchmarks/memory_table.py                 # both tables, Markdown
    python benchmarks/memory_table.py --arch tiny --size 512 --size 1024
"""

from __future__ import annotations

import argparse
import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ddcolor.build import build_ddcolor

#: Registry name of each architecture.
ARCH_MODELS = {"tiny": "ddcolor_paper_tiny", "large": "ddcolor_modelscope"}
#: Input sizes (square, pixels) of the table: the size rule's range, the ladder's steps.
SIZES = (256, 384, 512, 768, 1024, 1280, 1536, 2048)
#: Bytes per element of the precisions (bf16 needs what fp16 needs).
PRECISIONS = {"fp32": 4, "fp16": 2}
#: GPU memory classes (GiB) and cards of each; from 24 GiB on every size fits.
GPU_CLASSES = {
    4: "GTX 1650, T600",
    6: "RTX 2060, GTX 1660",
    8: "RTX 3070, RTX 4060 Ti 8 GB, Radeon RX 6600",
    12: "RTX 3060, RTX 4070",
    16: "T4, V100 16 GB, RTX 4080, Radeon RX 6800",
    24: "A10, L4, RTX 3090/4090, Radeon RX 7900 XTX, and every larger card",
}
#: GiB a GPU process spends before the model: context, kernels, workspaces.
CONTEXT_GIB = 1.0
#: Factor on the computed peak for the caching allocator's fragmentation.
FRAGMENTATION = 1.25
#: Operations autocast runs in 16 bits.
_LOW = ("convolution", "conv2d", "linear", "mm", "bmm", "addmm", "baddbmm", "matmul")
#: Operations autocast runs in 32 bits.
_HIGH = ("layer_norm", "group_norm", "softmax", "log_softmax")
MIB = 2**20


class _LiveBytes(TorchDispatchMode):
    """Adds up the bytes of live tensors after each operation; keeps the peak."""

    def __init__(self, element_bytes: int) -> None:
        super().__init__()
        self.element_bytes = element_bytes
        self.live = 0
        self.peak = 0
        self._sizes: dict[int, int] = {}

    def _width(self, tensor: torch.Tensor) -> int:
        return self._sizes.get(tensor.untyped_storage()._cdata, 4)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        name = func.__name__.split(".")[0].lstrip("_")
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        width = max((self._width(t) for t in inputs), default=4)
        transient = 0
        if self.element_bytes == 2 and name.startswith(_LOW):
            width = 2
            transient = sum(t.numel() * 2 for t in inputs if self._width(t) == 4)
        elif self.element_bytes == 2 and name.startswith(_HIGH):
            width = 4
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor):
                self._track(tensor, width)
        self.peak = max(self.peak, self.live + transient)
        return out

    def _track(self, tensor: torch.Tensor, width: int) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        if key in self._sizes:
            return  # a view of a tensor already counted
        size = storage.nbytes() // tensor.element_size() * width
        self._sizes[key] = width
        self.live += size

        def free() -> None:
            self.live -= size
            self._sizes.pop(key, None)

        weakref.finalize(storage, free)


@contextlib.contextmanager
def _autocast_off_on_meta() -> Iterator[None]:
    """Let the model's ``torch.autocast(device_type=...)`` blocks run on the meta device."""
    original = torch.autocast

    def autocast(device_type: str, *args: Any, **kwargs: Any) -> Any:
        if device_type == "meta":
            return contextlib.nullcontext()
        return original(device_type, *args, **kwargs)

    torch.autocast = autocast  # type: ignore[assignment,misc]
    try:
        yield
    finally:
        torch.autocast = original  # type: ignore[misc]


def forward_bytes(arch: str, size: int, precision: str) -> tuple[int, int]:
    """Compute the parameter bytes and the peak activation bytes of one forward pass.

    Args:
        arch: A key of :data:`ARCH_MODELS`.
        size: Square input size in pixels.
        precision: A key of :data:`PRECISIONS`.

    Returns:
        (parameter bytes in memory, peak bytes of the tensors of the forward pass);
        for 16 bits the parameters include autocast's 16-bit copies.
    """
    model = build_ddcolor(ARCH_MODELS[arch], device="meta")
    params = sum(p.numel() * p.element_size() for p in model.parameters())
    if precision != "fp32":
        params += params // 2
    mode = _LiveBytes(PRECISIONS[precision])
    x = torch.empty(1, 3, size, size, device="meta")
    with _autocast_off_on_meta(), torch.inference_mode(), mode:
        model(x)
    return params, mode.peak


def largest_size(totals: dict[int, int], gib: int) -> int | None:
    """Return the largest input size whose total fits a GPU of ``gib`` GiB, with margins."""
    room = (gib - CONTEXT_GIB) * 2**30
    fits = [size for size, total in totals.items() if total * FRAGMENTATION <= room]
    return max(fits, default=None)


def main() -> None:
    """Print both tables as Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", choices=sorted(ARCH_MODELS))
    parser.add_argument("--size", action="append", type=int)
    args = parser.parse_args()
    archs = args.arch or list(ARCH_MODELS)
    sizes = args.size or list(SIZES)
    totals: dict[tuple[str, str], dict[int, int]] = {}
    print("Computed on the meta device, NOT measured on a GPU (benchmarks/memory_table.py).\n")
    print("| model | size | precision | weights MiB | activations MiB | total MiB |")
    print("|---|---:|---|---:|---:|---:|")
    for arch in archs:
        for size in sizes:
            for precision in PRECISIONS:
                params, peak = forward_bytes(arch, size, precision)
                totals.setdefault((arch, precision), {})[size] = params + peak
                print(
                    f"| {arch} | {size} | {precision} | {params / MIB:,.0f} | "
                    f"{peak / MIB:,.0f} | {(params + peak) / MIB:,.0f} |"
                )
    print(
        f"\nLargest input size per GPU class: total x {FRAGMENTATION} (fragmentation) + "
        f"{CONTEXT_GIB:g} GiB (context) within the card's memory. Computed, not measured.\n"
    )
    columns = [(arch, precision) for arch in archs for precision in ("fp16", "fp32")]
    print("| GPU memory | e.g. | " + " | ".join(f"{a} {p}" for a, p in columns) + " |")
    print("|---|---|" + "---:|" * len(columns))
    for gib, cards in GPU_CLASSES.items():
        cells = [largest_size(totals[column], gib) for column in columns]
        shown = " | ".join("-" if cell is None else str(cell) for cell in cells)
        print(f"| {gib} GiB | {cards} | {shown} |")


if __name__ == "__main__":
    main()
