"""Building blocks of the end-to-end test: sample scans, an independent output reader, processes.

The samples are small synthetic "scans" in every format and depth an archive sends (JPEG,
PNG, PNG with alpha, palette PNG, 8- and 16-bit TIFF, WebP), plus broken files and files
that are no images at all. Outputs are read back with OpenCV and the PNG header, never
with the project's own decoder, so a mistake in it cannot hide a mistake in the outputs.
The ``panchro`` programs run as real processes, exactly as an operator starts them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import tifffile
from PIL import Image as PILImage

#: Seconds a ``panchro`` command that is expected to end may take.
COMMAND_TIMEOUT_S = 180.0
#: Seconds the workers get to stop after SIGTERM once they are idle.
STOP_TIMEOUT_S = 60.0
#: Seconds between two looks at something another process does.
POLL_S = 0.5

#: Leading bytes of each output format, to tell them apart without a decoder.
_MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"RIFF", "WEBP"),
)
#: Channels of each PNG colour type (grey, -, RGB, palette, grey+alpha, -, RGBA).
_PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


@dataclass(frozen=True)
class Sample:
    """One object uploaded below the collection's source prefix.

    Attributes:
        relative: Its key below the source prefix.
        data: Its bytes.
        output_format: Format the colorized copy must have (Pillow's name); None for a
            file that must not produce one.
        width: Width of the picture in pixels (0 for broken files).
        height: Height in pixels.
        bit_depth: Bits per sample of the original, which the output must keep.
        mode: Pixel mode the catalog must record for the original.
        alpha: The original's alpha channel (HxW), which the output must keep.
        problem: For a broken image, words its failure reason must contain.
        code: For a broken image, the failure code it must get.
        skip_reason: For a file the scan must pass over, the reason it reports.
    """

    relative: str
    data: bytes
    output_format: str | None = None
    width: int = 0
    height: int = 0
    bit_depth: int = 8
    mode: str = ""
    alpha: np.ndarray | None = None
    problem: str | None = None
    code: str | None = None
    skip_reason: str | None = None

    @property
    def good(self) -> bool:
        """Whether it is an image that must be colorized."""
        return self.output_format is not None

    @property
    def broken(self) -> bool:
        """Whether it is registered as an image but must fail."""
        return self.problem is not None

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of its bytes."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class OutputImage:
    """A colorized copy as an independent decoder sees it.

    Attributes:
        format: ``JPEG``, ``PNG``, ``TIFF`` or ``WEBP``, from the leading bytes.
        pixels: HxWxC samples as OpenCV decodes them (BGR or BGRA order).
        header_bit_depth: Bits per sample in the PNG header (None for other formats).
    """

    format: str
    pixels: np.ndarray
    header_bit_depth: int | None

    @property
    def width(self) -> int:
        """Width in pixels."""
        return int(self.pixels.shape[1])

    @property
    def height(self) -> int:
        """Height in pixels."""
        return int(self.pixels.shape[0])

    @property
    def channels(self) -> int:
        """Samples per pixel."""
        return 1 if self.pixels.ndim == 2 else int(self.pixels.shape[2])

    @property
    def bit_depth(self) -> int:
        """Bits per sample of the decoded pixels (and of the PNG header, which must agree)."""
        return int(self.pixels.dtype.itemsize * 8)

    @property
    def alpha(self) -> np.ndarray | None:
        """The alpha channel, or None without one."""
        return self.pixels[:, :, 3] if self.channels == 4 else None


def _scan_pixels(width: int, height: int, seed: int) -> np.ndarray:
    """An HxW float64 picture in [0, 1]: soft shapes and grain, like a scanned print."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    picture = 0.5 + 0.3 * np.sin(x / (4.0 + seed % 7)) * np.cos(y / (6.0 + seed % 5))
    picture += 0.15 * (x / max(width - 1, 1)) - 0.1 * (y / max(height - 1, 1))
    picture += rng.normal(0.0, 0.03, size=(height, width))
    clipped: np.ndarray = np.clip(picture, 0.0, 1.0)
    return clipped


def _gray8(width: int, height: int, seed: int) -> np.ndarray:
    return (_scan_pixels(width, height, seed) * 255.0).round().astype(np.uint8)


def _gray16(width: int, height: int, seed: int) -> np.ndarray:
    return (_scan_pixels(width, height, seed) * 65535.0).round().astype(np.uint16)


def _alpha(width: int, height: int) -> np.ndarray:
    """An alpha channel with fully transparent, opaque and partial regions."""
    ramp = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, axis=0)
    alpha = ramp.round().astype(np.uint8)
    alpha[: height // 4, :] = 0
    alpha[-height // 4 :, :] = 255
    return alpha


def _pillow(image: PILImage.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _jpeg_gray(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    image = PILImage.fromarray(_gray8(width, height, seed), mode="L")
    data = _pillow(image, "JPEG", quality=90)
    return Sample(relative, data, "JPEG", width, height, 8, "L")


def _jpeg_rgb(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    gray = _gray8(width, height, seed)
    image = PILImage.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")
    data = _pillow(image, "JPEG", quality=92)
    return Sample(relative, data, "JPEG", width, height, 8, "RGB")


def _png_gray(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    data = _pillow(PILImage.fromarray(_gray8(width, height, seed), mode="L"), "PNG")
    return Sample(relative, data, "PNG", width, height, 8, "L")


def _png_gray16(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    data = _pillow(PILImage.fromarray(_gray16(width, height, seed)), "PNG")
    assert _png_header(data)[2] == 16, "Pillow must write a 16-bit PNG"
    return Sample(relative, data, "PNG", width, height, 16, "I;16")


def _png_gray_alpha(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    alpha = _alpha(width, height)
    pixels = np.stack([_gray8(width, height, seed), alpha], axis=-1)
    data = _pillow(PILImage.fromarray(pixels, mode="LA"), "PNG")
    return Sample(relative, data, "PNG", width, height, 8, "LA", alpha=alpha)


def _png_rgba(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    alpha = _alpha(width, height)
    gray = _gray8(width, height, seed)
    pixels = np.stack([gray, gray, gray, alpha], axis=-1)
    data = _pillow(PILImage.fromarray(pixels, mode="RGBA"), "PNG")
    return Sample(relative, data, "PNG", width, height, 8, "RGBA", alpha=alpha)


def _png_palette(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    gray = PILImage.fromarray(_gray8(width, height, seed), mode="L")
    data = _pillow(gray.convert("RGB").quantize(colors=64), "PNG")
    return Sample(relative, data, "PNG", width, height, 8, "P")


def _tiff_gray(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    image = PILImage.fromarray(_gray8(width, height, seed), mode="L")
    data = _pillow(image, "TIFF", compression="tiff_lzw", dpi=(600, 600))
    return Sample(relative, data, "TIFF", width, height, 8, "L")


def _tiff_gray16(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    data = _pillow(PILImage.fromarray(_gray16(width, height, seed)), "TIFF")
    return Sample(relative, data, "TIFF", width, height, 16, "I;16")


def _tiff_rgb16(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    gray = _gray16(width, height, seed)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.stack([gray] * 3, axis=-1), photometric="rgb")
    return Sample(relative, buffer.getvalue(), "TIFF", width, height, 16, "RGB;16")


def _webp(relative: str, size: tuple[int, int], seed: int, *, lossless: bool) -> Sample:
    width, height = size
    gray = _gray8(width, height, seed)
    image = PILImage.fromarray(np.stack([gray] * 3, axis=-1), mode="RGB")
    data = _pillow(image, "WEBP", lossless=lossless, quality=90)
    return Sample(relative, data, "WEBP", width, height, 8, "RGB")


def _webp_rgba(relative: str, size: tuple[int, int], seed: int) -> Sample:
    width, height = size
    alpha = _alpha(width, height)
    gray = _gray8(width, height, seed)
    pixels = np.stack([gray, gray, gray, alpha], axis=-1)
    data = _pillow(PILImage.fromarray(pixels, mode="RGBA"), "WEBP", lossless=True)
    return Sample(relative, data, "WEBP", width, height, 8, "RGBA", alpha=alpha)


def good_samples() -> list[Sample]:
    """The images that must be colorized: 32 of them, 64-200 px, in every supported kind.

    Returns:
        The samples, in no particular order, spread over three folders.
    """
    samples = [
        _jpeg_gray(f"box1/print{index:02d}.jpg", size, seed=index)
        for index, size in enumerate([(64, 64), (200, 150), (150, 200), (131, 77), (96, 64)])
    ]
    samples.append(_jpeg_gray("box1/UPPER.JPEG", (120, 90), seed=5))
    samples += [
        _jpeg_rgb(f"box1/rgb{index}.jpg", size, seed=10 + index)
        for index, size in enumerate([(180, 120), (77, 131), (64, 100)])
    ]
    samples += [
        _png_gray(f"box2/plate{index}.png", size, seed=20 + index)
        for index, size in enumerate([(64, 80), (199, 101), (128, 128), (90, 170)])
    ]
    samples += [
        _png_gray16(f"box2/deep/plate16_{index}.png", size, seed=30 + index)
        for index, size in enumerate([(100, 75), (67, 143), (160, 96)])
    ]
    samples += [
        _png_gray_alpha("box2/cutout_la.png", (110, 80), seed=40),
        _png_gray_alpha("box2/cutout_la2.png", (72, 150), seed=41),
        _png_rgba("box2/cutout_rgba.png", (140, 100), seed=42),
        _png_rgba("box2/cutout_rgba2.png", (64, 64), seed=43),
        _png_palette("box2/palette.png", (120, 88), seed=44),
    ]
    samples += [
        _tiff_gray(f"negatives/neg{index}.tif", size, seed=50 + index)
        for index, size in enumerate([(150, 110), (64, 192), (101, 99)])
    ]
    samples += [
        _tiff_gray16(f"negatives/deep/neg16_{index}.tiff", size, seed=60 + index)
        for index, size in enumerate([(128, 96), (75, 133), (190, 64)])
    ]
    samples += [
        _tiff_rgb16("negatives/deep/rgb16.tif", (96, 120), seed=70),
        _webp("web/lossless.webp", (128, 80), seed=80, lossless=True),
        _webp("web/lossless2.webp", (66, 66), seed=81, lossless=True),
        _webp("web/lossy.webp", (150, 100), seed=82, lossless=False),
        _webp_rgba("web/alpha.webp", (100, 140), seed=83),
    ]
    return samples


def broken_samples() -> list[Sample]:
    """Files with an image's name that the scan registers but no worker can decode.

    Returns:
        A truncated JPEG, random bytes named ``.png`` and a truncated 16-bit TIFF.
    """
    whole_jpeg = _jpeg_gray("x.jpg", (160, 120), seed=90).data
    noise = np.random.default_rng(91).integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    whole_tiff = _tiff_gray16("x.tif", (150, 150), seed=92).data
    return [
        Sample(
            "box1/broken.jpg",
            whole_jpeg[: len(whole_jpeg) // 2],
            problem="truncated",
            code="decode.truncated",
        ),
        Sample(
            "box2/noise.png",
            b"\x00" + noise,
            problem="not a recognised image format",
            code="decode.not_image",
        ),
        Sample(
            "negatives/cut.tif",
            whole_tiff[: len(whole_tiff) // 3],
            problem="truncated",
            code="decode.truncated",
        ),
    ]


def skipped_samples() -> list[Sample]:
    """Files the scan must pass over: an empty ``.tif``, a text file, a hidden file.

    Returns:
        The samples, each with the skip reason ``panchro submit`` reports.
    """
    return [
        Sample("negatives/empty.tif", b"", skip_reason="empty"),
        Sample(
            "box1/notes.txt",
            b"Box 1: prints from the 1920s, scanned 2024.\n",
            skip_reason="not-an-image",
        ),
        Sample("box2/.DS_Store", b"\x00\x00\x00\x01Bud1" + b"\x00" * 64, skip_reason="hidden"),
    ]


def _png_header(data: bytes) -> tuple[int, int, int, int]:
    """Width, height, bit depth and colour type from a PNG's IHDR chunk."""
    assert data[12:16] == b"IHDR", "a PNG starts with its IHDR chunk"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    return int(width), int(height), int(depth), int(colour)


def read_output(data: bytes) -> OutputImage:
    """Decode a colorized copy with OpenCV (and read a PNG's header by hand).

    Args:
        data: The output file.

    Returns:
        What it holds.

    Raises:
        AssertionError: If the bytes are no image OpenCV decodes completely.
    """
    fmt = next((name for magic, name in _MAGIC if data.startswith(magic)), None)
    assert fmt is not None, f"output starts with {data[:12]!r}: not an image"
    pixels = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    assert pixels is not None, f"OpenCV cannot decode the {fmt} output"
    header_depth = None
    if fmt == "PNG":
        width, height, header_depth, colour = _png_header(data)
        assert (width, height) == (pixels.shape[1], pixels.shape[0])
        assert _PNG_CHANNELS[colour] == (1 if pixels.ndim == 2 else pixels.shape[2])
    return OutputImage(fmt, pixels, header_depth)


def is_colour(image: OutputImage) -> bool:
    """Whether an output holds three colour channels (with or without alpha).

    Args:
        image: The decoded output.

    Returns:
        True for BGR and BGRA pixels.
    """
    return image.channels in (3, 4)


def panchro_argv(*args: str, database_url: str, broker_url: str, s3_endpoint_url: str) -> list[str]:
    """The command line of ``panchro`` with the given services.

    Args:
        *args: The command and its options.
        database_url: The catalog.
        broker_url: The Redis broker.
        s3_endpoint_url: The S3 endpoint.

    Returns:
        The program and its arguments.
    """
    return [
        sys.executable,
        "-m",
        "panchro.cli",
        "--database-url",
        database_url,
        "--broker-url",
        broker_url,
        "--s3-endpoint-url",
        s3_endpoint_url,
        *args,
    ]


def run_command(
    argv: Sequence[str], env: Mapping[str, str], cwd: Path
) -> subprocess.CompletedProcess[str]:
    """Run a command that must end, and fail the test with its output if it does not succeed.

    Args:
        argv: The command line.
        env: Its environment.
        cwd: Its working directory.

    Returns:
        The finished process, with its output.
    """
    done = subprocess.run(
        list(argv),
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"{argv[3:]} exited with {done.returncode}:\n{done.stderr}"
    return done


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait, bounded, until ``condition()`` holds; fail naming ``what`` if it never does.

    The timeout is a guard against hanging, not a measurement.

    Args:
        condition: Checked every ``POLL_S`` seconds; it may fail the test itself.
        timeout: Seconds to wait at most.
        what: What was waited for, for the failure message.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout:.0f} s waiting for {what}")
        time.sleep(POLL_S)


def _process_gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return True
    return state in ("Z", "X")


class Launcher:
    """``panchro workers`` running as a real process, with its log in a file.

    Args:
        argv: Its command line.
        env: Its environment.
        log: File that receives its output and its workers' output.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=log.parent,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def text(self) -> str:
        """Everything the launcher and its workers logged so far."""
        return self.log.read_text(errors="replace")

    def assert_running(self) -> None:
        """Fail the test, with the log, if the launcher has stopped."""
        code = self.proc.poll()
        assert code is None, f"panchro workers exited with {code}:\n{self.text()}"

    def worker_pids(self) -> dict[str, int]:
        """The process id of each worker the launcher started, by node name."""
        found = re.findall(r"started worker (\S+) \(pid (\d+)\)", self.text())
        return {name: int(pid) for name, pid in found}

    def pool_pids(self) -> list[int]:
        """The process ids of the workers' pool processes (the ones that run the model)."""
        return [int(pid) for pid in re.findall(r"pool process (\d+) loads the model", self.text())]

    def stop(self) -> int:
        """Send SIGTERM (a warm shutdown) and wait for the launcher to exit.

        Returns:
            Its exit code.
        """
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=STOP_TIMEOUT_S)

    def all_gone(self) -> bool:
        """Whether the launcher, its workers and their pool processes have all exited."""
        pids = [self.proc.pid, *self.worker_pids().values(), *self.pool_pids()]
        return self.proc.poll() is not None and all(_process_gone(pid) for pid in pids)

    def kill(self) -> None:
        """Kill whatever of it is left (teardown after a failure); the workers first."""
        for pid in self.worker_pids().values():
            if _process_gone(pid):
                continue
            # Each worker leads its own process group, which holds its pool process.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
