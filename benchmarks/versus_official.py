"""Images per second of panchro on the CPU against the official DDColor inference code.

The official pipeline is the upstream repository's own code (github.com/piddnad/DDColor:
its ``ColorizationPipeline.process`` and model builder, as its ``scripts/infer.py`` uses
them: fp32, OpenCV resize and Lab, nearest ab upsampling), imported from a checkout this
script is pointed at, never copied. panchro runs its default (``load_colorizer`` with
precision ``auto``, guided upsampling, the torch backend) and fp32.

Both get the same checkpoint and the same scans, and take turns image by image, each in a
process of its own (its own allocator settings and imports, as when run alone):

- **the checkpoint**: seeded random weights in the official layout, BasicSR-style
  (``{"params": state_dict}``), with the last colour-embedding layer scaled so that the
  fp32 ab of the first scan reach about +-100, as a trained model's do; random weights
  predict ab of a few tenths, which would hide reduced-precision errors. The official
  builder loads it with ``strict=False``: the script checks that every tensor arrived.
- **the scans**: ``--images`` synthetic grey scans of ``--width`` x ``--height``; the
  official code gets them as ``cv2.imread`` gives a grey file (three equal BGR channels),
  panchro as its decoder gives one (HxW). Reading and writing files is timed by neither.
- **the turns**: every pipeline colorizes its first scan once untimed (a worker warms up
  the same way), then for each round and scan every pipeline colorizes that scan, the
  order reversed on every other scan. images/s is the count over the summed seconds;
  ratio is against the official code in the same rounds.
- **max |d ab| vs fp32**: the largest difference of a pipeline's network output from the
  official fp32 network's, on the network inputs of the first ``--check`` scans (built
  once, by panchro's ``network_input``, and given to both); ``max |ab|`` is the largest
  value of the reference.

The official code imports timm (``DropPath``, ``trunc_normal_``; optional upstream) and
torchvision (``make_grid``, never called in inference) through its BasicSR utilities;
where they do not import, this script registers small stand-ins of its own for those
names. It needs OpenCV (``pip install opencv-python-headless``, in panchro's ``test`` extra).

Usage::

    git clone https://github.com/piddnad/DDColor /tmp/DDColor
    python benchmarks/versus_official.py --official /tmp/DDColor      # or PANCHRO_OFFICIAL_DDCOLOR
    python benchmarks/versus_official.py --arch tiny --images 4 --rounds 2
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
import types
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

#: Environment variable naming the official checkout when --official is not given.
OFFICIAL_ENV = "PANCHRO_OFFICIAL_DDCOLOR"
#: Files that identify an official checkout.
OFFICIAL_MARKERS = ("ddcolor/pipeline.py", "ddcolor/model.py", "basicsr/archs/ddcolor_arch_utils")
#: Registry name and official ``model_size`` of each configuration.
ARCHS = {"tiny": ("ddcolor_paper_tiny", "tiny"), "large": ("ddcolor_modelscope", "large")}
#: Largest |ab| (Lab units) the calibrated checkpoint predicts on the first scan.
TARGET_AB = 100.0
#: Rescalings of the last colour-embedding layer that bring |ab| to TARGET_AB.
CALIBRATION_STEPS = 3
#: Seed of the weights and the scans.
SEED = 0


@dataclass(frozen=True)
class Pipeline:
    """One pipeline of the table.

    Attributes:
        label: Its name in the table.
        kind: ``official`` or ``panchro``.
        options: ``load_colorizer`` keyword arguments (panchro only).
    """

    label: str
    kind: str
    options: tuple[tuple[str, str], ...] = ()


PIPELINES = (
    Pipeline("official (fp32)", "official"),
    Pipeline("panchro default", "panchro"),
    Pipeline("panchro fp32", "panchro", (("precision", "fp32"),)),
)
ONNX = Pipeline("panchro onnx (fp32)", "panchro", (("backend", "onnx"), ("precision", "fp32")))


def find_official(given: str | None) -> Path:
    """The official checkout: ``--official``, else ``$PANCHRO_OFFICIAL_DDCOLOR``.

    Raises:
        SystemExit: With what to do, if neither names a checkout.
    """
    where = given or os.environ.get(OFFICIAL_ENV)
    if not where:
        raise SystemExit(
            f"no official DDColor checkout: pass --official DIR or set {OFFICIAL_ENV} "
            "(git clone https://github.com/piddnad/DDColor DIR)"
        )
    folder = Path(where).expanduser().resolve()
    missing = [marker for marker in OFFICIAL_MARKERS if not (folder / marker).exists()]
    if missing:
        raise SystemExit(
            f"{folder} is not a checkout of github.com/piddnad/DDColor (missing "
            f"{', '.join(missing)}); pass --official DIR or set {OFFICIAL_ENV}"
        )
    return folder


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False
    return True


def install_stand_ins() -> list[str]:
    """Register stand-ins for the timm and torchvision names the official code imports.

    Returns:
        The modules stood in for (none where the real ones import).
    """
    import torch
    from torch import nn

    made = []
    if not _importable("timm.layers"):

        class DropPath(nn.Module):  # stochastic depth: the identity in eval mode
            def __init__(self, drop_prob: float = 0.0) -> None:
                super().__init__()
                self.drop_prob = drop_prob

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                return x

        layers = types.ModuleType("timm.layers")
        layers.DropPath = DropPath  # type: ignore[attr-defined]
        layers.trunc_normal_ = nn.init.trunc_normal_  # type: ignore[attr-defined]
        timm = types.ModuleType("timm")
        timm.layers = layers  # type: ignore[attr-defined]
        sys.modules.update({"timm": timm, "timm.layers": layers})
        made.append("timm")
    if not _importable("torchvision.utils"):

        def make_grid(*args: Any, **kwargs: Any) -> Any:
            raise NotImplementedError("torchvision stand-in: make_grid is not used in inference")

        utils = types.ModuleType("torchvision.utils")
        utils.make_grid = make_grid  # type: ignore[attr-defined]
        vision = types.ModuleType("torchvision")
        vision.utils = utils  # type: ignore[attr-defined]
        sys.modules.update({"torchvision": vision, "torchvision.utils": utils})
        made.append("torchvision")
    return made


def make_scans(count: int, width: int, height: int) -> list[np.ndarray]:
    """Synthetic grey scans: smooth shapes, edges and film grain, HxW uint8."""
    rng = np.random.default_rng(SEED)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    scans = []
    for index in range(count):
        picture = 0.5 + 0.25 * np.sin(x / (40.0 + 7 * index)) * np.cos(y / (55.0 + 5 * index))
        picture += 0.2 * ((x - width / 2) ** 2 + (y - height / 3) ** 2 < (height / 4) ** 2)
        picture += rng.normal(0.0, 0.03, size=(height, width)).astype(np.float32)
        scans.append((np.clip(picture, 0.0, 1.0) * 255.0).astype(np.uint8))
    return scans


def write_checkpoint(folder: Path, model_name: str, scan: np.ndarray, size: int) -> Path:
    """A seeded random checkpoint in the official layout, its ab scaled to a trained range."""
    import torch

    from ddcolor.build import build_ddcolor
    from ddcolor.pipeline import network_input

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(SEED)
        model = build_ddcolor(model_name)
    x, _ = network_input(scan, size, "opencv")
    last = model.decoder.color_decoder.color_embed.layers[-1]
    # ab = colour part (linear in the last layer) + a small part from the grey input: a few
    # rescalings settle the largest |ab| near the target.
    for _ in range(CALIBRATION_STEPS):
        with torch.inference_mode():
            span = float(model(x).abs().max())
        with torch.no_grad():
            last.weight.mul_(TARGET_AB / span)
            last.bias.mul_(TARGET_AB / span)
    path = folder / f"{model_name}.pth"
    torch.save({"params": model.state_dict()}, path)
    return path


def _official(folder: Path, weights: Path, model_size: str, size: int) -> tuple[Any, Any]:
    """Build the official model and pipeline from the checkout, and check the weights arrived."""
    sys.path.insert(0, str(folder))
    install_stand_ins()
    import torch

    official = importlib.import_module("ddcolor")
    assert Path(official.__file__).resolve().is_relative_to(folder), official.__file__
    model = official.build_ddcolor_model(
        official.DDColor,
        model_path=str(weights),
        input_size=size,
        model_size=model_size,
        device=torch.device("cpu"),
    )
    state = torch.load(weights, map_location="cpu", weights_only=True)["params"]
    theirs = model.state_dict()
    absent = sorted(set(theirs) - set(state)) + sorted(set(state) - set(theirs))
    differ = [key for key in state if key in theirs and not torch.equal(theirs[key], state[key])]
    if absent or differ:
        raise SystemExit(f"the official model did not take the checkpoint: {absent + differ}")
    return model, official.ColorizationPipeline(model, input_size=size, device=torch.device("cpu"))


def serve(pipeline: Pipeline, setup: dict[str, Any], conn: Connection) -> None:
    """A pipeline's process: build it, warm it up, then colorize the scans it is asked for."""
    import torch

    if setup["threads"]:
        import cv2

        torch.set_num_threads(setup["threads"])
        cv2.setNumThreads(setup["threads"])

    scans = make_scans(setup["images"], setup["width"], setup["height"])
    network = [0.0]
    if pipeline.kind == "official":
        model, official = _official(
            setup["official"], setup["weights"], setup["model_size"], setup["size"]
        )
        bgr = [np.repeat(scan[..., None], 3, axis=2) for scan in scans]
        began = [0.0]
        model.register_forward_pre_hook(lambda *_: began.__setitem__(0, time.perf_counter()))
        model.register_forward_hook(
            lambda *_: network.__setitem__(0, time.perf_counter() - began[0])
        )

        def colorize(index: int) -> float:
            official.process(bgr[index])
            return network[0]

        def predict(x: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(x)).numpy()

    else:
        from ddcolor.pipeline import load_colorizer

        colorizer = load_colorizer(setup["weights"], device="cpu", **dict(pipeline.options))

        def colorize(index: int) -> float:
            return colorizer.colorize(scans[index]).network_seconds

        def predict(x: np.ndarray) -> np.ndarray:
            ab, _ = colorizer.runner.predict(torch.from_numpy(x), colorizer.precision)
            return ab.numpy()

    colorize(0)
    conn.send(("ready", torch.get_num_threads()))
    while True:
        command, argument = conn.recv()
        if command == "stop":
            return
        if command == "ab":
            conn.send(predict(argument))
            continue
        began_at = time.perf_counter()
        network_s = colorize(argument)
        conn.send((time.perf_counter() - began_at, network_s))


def _load() -> str:
    return ", ".join(f"{value:.2f}" for value in os.getloadavg())


def bench(arch: str, args: argparse.Namespace, pipelines: list[Pipeline]) -> list[list[str]]:
    """Run one configuration: every pipeline in turn, image by image. Returns table rows."""
    model_name, model_size = ARCHS[arch]
    scans = make_scans(args.images, args.width, args.height)
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory() as folder:
        weights = write_checkpoint(Path(folder), model_name, scans[0], args.size)
        setup = {
            "official": args.official,
            "weights": weights,
            "model_size": model_size,
            "size": args.size,
            "images": args.images,
            "width": args.width,
            "height": args.height,
            "threads": args.threads,
        }
        conns, procs = [], []
        for pipeline in pipelines:  # one at a time: loading is not timed, but it is heavy
            parent, child = context.Pipe()
            proc = context.Process(target=serve, args=(pipeline, setup, child))
            proc.start()
            assert parent.recv()[0] == "ready"
            conns.append(parent)
            procs.append(proc)
        seconds = [[0.0, 0.0] for _ in pipelines]
        for _ in range(args.rounds):
            for index in range(args.images):
                order = range(len(pipelines)) if index % 2 == 0 else reversed(range(len(pipelines)))
                for which in order:
                    conns[which].send(("run", index))
                    total, network = conns[which].recv()
                    seconds[which][0] += total
                    seconds[which][1] += network
        diffs, span = _check(conns, scans[: args.check], args.size)
        for conn, proc in zip(conns, procs, strict=True):
            conn.send(("stop", None))
            proc.join()
    count = args.rounds * args.images
    official_rate = count / seconds[0][0]
    rows = []
    for pipeline, (total, network), diff in zip(pipelines, seconds, diffs, strict=True):
        rate = count / total
        rows.append(
            [
                f"{arch} {args.size}",
                pipeline.label,
                f"{rate:.3f}",
                f"{rate / official_rate:.2f}",
                "reference" if pipeline.kind == "official" else f"{diff:.3g}",
                f"{span:.0f}",
                f"{total / count:.2f}",
                f"{network / count:.2f}",
                f"{(total - network) / count:.2f}",
            ]
        )
    return rows


def _check(
    conns: list[Connection], scans: list[np.ndarray], size: int
) -> tuple[list[float], float]:
    """Largest |d ab| of each pipeline against the official fp32 network, and the largest |ab|."""
    from ddcolor.pipeline import network_input

    diffs = [0.0] * len(conns)
    span = 0.0
    for scan in scans:
        x = network_input(scan, size, "opencv")[0].numpy()
        outputs = []
        for conn in conns:
            conn.send(("ab", x))
            outputs.append(conn.recv())
        span = max(span, float(np.abs(outputs[0]).max()))
        for which, ab in enumerate(outputs):
            diffs[which] = max(diffs[which], float(np.abs(ab - outputs[0]).max()))
    return diffs, span


def main() -> None:
    """Parse the options and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", help=f"official checkout (default: ${OFFICIAL_ENV})")
    parser.add_argument("--arch", action="append", choices=sorted(ARCHS))
    parser.add_argument("--size", type=int, default=512, help="network input size, pixels")
    parser.add_argument("--images", type=int, default=8, help="scans per round")
    parser.add_argument("--width", type=int, default=2000, help="scan width, pixels")
    parser.add_argument("--height", type=int, default=1500, help="scan height, pixels")
    parser.add_argument("--rounds", type=int, default=1, help="passes over the scans")
    parser.add_argument("--check", type=int, default=2, help="scans whose ab are compared")
    parser.add_argument("--onnx", action="store_true", help="also time --backend onnx")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch and OpenCV threads (default: theirs)"
    )
    args = parser.parse_args()
    args.official = find_official(args.official)
    pipelines = [*PIPELINES, *([ONNX] if args.onnx else [])]
    import torch

    print(
        f"# {os.cpu_count()} cores ({platform.processor() or platform.machine()}), "
        f"torch {torch.__version__}, {args.threads or torch.get_num_threads()} threads; "
        f"{args.images} scans of {args.width}x{args.height}, {args.rounds} round(s); "
        f"load average before: {_load()}",
        flush=True,
    )
    header = [
        "config",
        "pipeline",
        "images/s",
        "ratio",
        "max |d ab| vs fp32",
        "max |ab|",
        "s/image",
        "network s",
        "outside s",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header), flush=True)
    for arch in args.arch or ["tiny", "large"]:
        for row in bench(arch, args, pipelines):
            print("| " + " | ".join(row) + " |", flush=True)
    print(f"# load average after: {_load()}")


if __name__ == "__main__":
    main()
