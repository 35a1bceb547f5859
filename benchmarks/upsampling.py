"""Measure how well each ab upsampling method restores full-resolution colour.

DDColor (Kang et al., ICCV 2023; github.com/piddnad/DDColor, Apache-2.0) predicts ab on a
square grid (512 px by default) that the pipeline brings back to the scan's size. This takes
real colour photographs shipped with scikit-image, computes their true ab, makes the ab a
perfect network would predict (the ab of the image resized to the grid, exactly as the network
input is made), upsamples it with every method and compares with the truth:

- mean CIE76 colour difference over all pixels and over colour edges (the 10 % of pixels where
  the true ab changes fastest); L is the original's in both, so delta E is the ab distance;
- the CPU time to upsample to a 12-megapixel scan, in milliseconds per megapixel (CPU time,
  not wall time, so that other work on the machine does not inflate it);
- for guided upsampling, the same with film grain (noise) added to L, which it follows.

The photographs are 300 to 600 px, smaller than a scan, so besides the 512 grid the table
also uses 128 and 64 px grids, which give the 4x to 8x ratios of 2000 to 4000 px scans at 512.

Usage::

    python benchmarks/upsampling.py              # the table of docs/upsampling.md
    python benchmarks/upsampling.py --tune       # guided filter radius and eps grid
    python benchmarks/upsampling.py --crops docs/img
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from ddcolor import colorspace, transforms
from ddcolor.registry import UPSAMPLE_METHODS, UpsampleMethod

#: Photographs used, by scikit-image name.
IMAGES: dict[str, Callable[[], np.ndarray]] = {
    "astronaut": data.astronaut,
    "coffee": data.coffee,
    "chelsea": data.chelsea,
}
#: Network grid sizes evaluated, in pixels.
GRIDS = (512, 128, 64)
#: Film grain added to L for the robustness rows, standard deviations in L units.
GRAINS = (2.0, 4.0)
#: Share of pixels counted as colour edges (those with the steepest true ab), fraction.
EDGE_SHARE = 0.10
#: Size of the synthetic scan the timing upsamples to, (height, width) in pixels.
TIMING_SHAPE = (3000, 4000)
#: Timing repetitions; the best is reported.
TIMING_REPEATS = 3
#: Side of one crop panel, in pixels of the original photograph.
CROP = 96
#: Enlargement of crop panels for viewing (nearest neighbour), factor.
CROP_ZOOM = 2
#: Crops written by --crops: (image, grid, top, left) in pixels.
CROPS = (("astronaut", 64, 335, 120), ("coffee", 64, 150, 165))


def _truth(rgb8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    lab = colorspace.rgb_to_lab(colorspace.to_unit_float(rgb8), math="exact")
    return lab[..., 0], lab[..., 1:]


def _prediction(rgb8: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray]:
    """ab and L on the grid: what a perfect network would see and predict."""
    small = colorspace.rgb_to_lab(transforms.resize_bilinear(rgb8, (grid, grid)), math="exact")
    return small[..., 1:], small[..., 0]


def _upsample(
    ab: np.ndarray, light_small: np.ndarray, light: np.ndarray, method: UpsampleMethod
) -> np.ndarray:
    shape = (light.shape[0], light.shape[1])
    upsampler = transforms.AbUpsampler(ab, shape, method, guide=light_small)
    return upsampler.rows(0, shape[0], light)


def _edge_mask(true_ab: np.ndarray) -> np.ndarray:
    dy, dx = np.gradient(true_ab, axis=(0, 1))
    steepness = np.sqrt((dy**2 + dx**2).sum(-1))
    edges: np.ndarray = steepness >= np.quantile(steepness, 1 - EDGE_SHARE)
    return edges


def evaluate(
    grain: float = 0.0, methods: tuple[UpsampleMethod, ...] = UPSAMPLE_METHODS
) -> dict[tuple[str, int, str], tuple[float, float]]:
    """Mean delta E (all pixels, edges) per (image, grid, method).

    Args:
        grain: Standard deviation of Gaussian noise added to L, in L units, to mimic film
            grain: it reaches guided upsampling through its guides, while the predicted ab
            and the true ab stay those of the clean photograph.
        methods: Methods to evaluate.
    """
    rng = np.random.default_rng(0)
    scores: dict[tuple[str, int, str], tuple[float, float]] = {}
    for name, load in IMAGES.items():
        rgb8 = load()
        light, true_ab = _truth(rgb8)
        edges = _edge_mask(true_ab)
        if grain:
            light = light + rng.normal(0, grain, light.shape).astype(np.float32)
        for grid in GRIDS:
            ab, light_small = _prediction(rgb8, grid)
            if grain:
                light_small = transforms.resize_bilinear(light, (grid, grid))
            for method in methods:
                delta = np.linalg.norm(_upsample(ab, light_small, light, method) - true_ab, axis=-1)
                scores[name, grid, method] = (float(delta.mean()), float(delta[edges].mean()))
    return scores


def time_methods() -> dict[str, float]:
    """Best time per method to upsample a 512 grid to :data:`TIMING_SHAPE`, in ms per megapixel."""
    rng = np.random.default_rng(0)
    ab = rng.normal(0, 20, (512, 512, 2)).astype(np.float32)
    light_small = rng.uniform(0, 100, (512, 512)).astype(np.float32)
    light = rng.uniform(0, 100, TIMING_SHAPE).astype(np.float32)
    megapixels = TIMING_SHAPE[0] * TIMING_SHAPE[1] / 1e6
    timings: dict[str, float] = {}
    for method in UPSAMPLE_METHODS:
        best = float("inf")
        for _ in range(TIMING_REPEATS):
            began = time.process_time()
            _upsample(ab, light_small, light, method)
            best = min(best, time.process_time() - began)
        timings[method] = 1000 * best / megapixels
    return timings


def print_table() -> None:
    """Print the markdown table of docs/upsampling.md."""
    scores = evaluate()
    timings = time_methods()
    header = "| method | " + " | ".join(f"grid {g}: all / edges" for g in GRIDS)
    print(header + " | ms per MP |")
    print("|---" * (len(GRIDS) + 2) + "|")
    for method in UPSAMPLE_METHODS:
        cells = []
        for grid in GRIDS:
            values = np.array([scores[name, grid, method] for name in IMAGES])
            cells.append(f"{values[:, 0].mean():.2f} / {values[:, 1].mean():.2f}")
        print(f"| {method} | " + " | ".join(cells) + f" | {timings[method]:.0f} |")
    for grain in GRAINS:
        noisy = evaluate(grain, ("guided",))
        cells = []
        for grid in GRIDS:
            values = np.array([noisy[name, grid, "guided"] for name in IMAGES])
            cells.append(f"{values[:, 0].mean():.2f} / {values[:, 1].mean():.2f}")
        print(f"| guided, grain {grain:g} L | " + " | ".join(cells) + " | |")
    print()
    print("Per image, grid 64 (all / edges):")
    for name in IMAGES:
        cells = [
            f"{m} {scores[name, 64, m][0]:.2f}/{scores[name, 64, m][1]:.2f}"
            for m in UPSAMPLE_METHODS
        ]
        print(f"- {name}: " + ", ".join(cells))


def tune() -> None:
    """Print mean delta E of guided upsampling over radius, eps and film grain."""
    print("| radius | eps | all / edges, clean | all / edges, grain 4 L |")
    print("|---|---|---|---|")
    saved = transforms.GUIDED_RADIUS, transforms.GUIDED_EPS
    try:
        for radius in (1, 2, 4):
            for eps in (1e-4, 1e-3, 1e-2):
                transforms.GUIDED_RADIUS, transforms.GUIDED_EPS = radius, eps
                cells = []
                for grain in (0.0, GRAINS[-1]):
                    scores = np.array(list(evaluate(grain, ("guided",)).values()))
                    cells.append(f"{scores[:, 0].mean():.2f} / {scores[:, 1].mean():.2f}")
                print(f"| {radius} | {eps:g} | " + " | ".join(cells) + " |")
    finally:
        transforms.GUIDED_RADIUS, transforms.GUIDED_EPS = saved


def write_crops(folder: Path) -> None:
    """Write side-by-side crops: original, then each method, at the listed grids."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, grid, top, left in CROPS:
        rgb8 = IMAGES[name]()
        light, _ = _truth(rgb8)
        ab, light_small = _prediction(rgb8, grid)
        window = (slice(top, top + CROP), slice(left, left + CROP))
        panels = [rgb8[window]]
        for method in ("nearest", "bilinear", "guided"):
            up = _upsample(ab, light_small, light, method)
            lab = np.concatenate([light[..., None], up], axis=-1)[window]
            panels.append(np.rint(colorspace.lab_to_rgb(lab, math="exact") * 255).astype(np.uint8))
        strip = np.concatenate(panels, axis=1).repeat(CROP_ZOOM, 0).repeat(CROP_ZOOM, 1)
        path = folder / f"upsampling-{name}-{grid}.png"
        Image.fromarray(strip).save(path, optimize=True)
        print(f"wrote {path}")


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tune", action="store_true", help="grid-search the guided filter")
    parser.add_argument("--crops", type=Path, help="write side-by-side crops to this folder")
    args = parser.parse_args()
    if args.tune:
        tune()
    elif args.crops:
        write_crops(args.crops)
    else:
        print_table()


if __name__ == "__main__":
    main()
