"""The colour work around the DDColor network, on the network's device.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023, arXiv:2212.11613; code at https://github.com/piddnad/DDColor under Apache-2.0, the
licence under which the authors also publish the checkpoints) runs in a few milliseconds on a
data-centre GPU, while the published pipeline's colour work around it (resize to the square
input, Lab, ab upsampling to full resolution, Lab -> RGB) takes a third of a second or more
per 3-megapixel scan in numpy on the host. :class:`DeviceImage` does that work with torch
operations where the network runs:

1. the decoded image is copied to the device once (from pinned memory, without waiting);
2. :meth:`DeviceImage.network_input` makes the square grey RGB input and its L there;
3. after the forward, :meth:`DeviceImage.compose` upsamples ab, joins it with the
   full-resolution L and converts to RGB, one band of rows at a time, each band copied back
   into pinned host memory as soon as it is ready; the host waits once, at the end, with
   the interpreter lock released (other threads decode and encode meanwhile).

The arithmetic is that of :mod:`ddcolor.colorspace` and :mod:`ddcolor.transforms`
(:mod:`ddcolor.tensor_colorspace`, :mod:`ddcolor.tensor_transforms`), so the result equals
the numpy path's to within one level; the same code runs on the CPU device, which is how it
is tested where there is no GPU. :func:`resolve_colour_ops` decides which path a pipeline
takes (:data:`ddcolor.registry.COLOUR_OPS`).
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from ddcolor.colorspace import ColorMath
from ddcolor.registry import COLOUR_OPS, UpsampleMethod
from ddcolor.tensor_colorspace import grey_lightness, lab_to_rgb, rgb_lightness, unit_float
from ddcolor.tensor_transforms import TensorAbUpsampler, resize_bilinear

__all__ = ["DEVICE_BAND_PIXELS", "DeviceImage", "device_image", "resolve_colour_ops"]

logger = logging.getLogger(__name__)

#: Pixels converted per band on the device, count: bounds the temporary tensors (about 30
#: float32 values a pixel at the peak of Lab -> RGB, under 512 MB) whatever the scan's size;
#: a 3-megapixel scan is one band.
DEVICE_BAND_PIXELS = 1 << 22
#: Largest image copied through pinned host memory, in bytes; larger ones are copied from
#: and to ordinary memory (synchronously), so pinned memory, which the system cannot page
#: out, stays bounded.
PIN_MAX_BYTES = 1 << 30


def resolve_colour_ops(requested: str, device: torch.device) -> str:
    """Decide where a pipeline's colour work runs.

    Args:
        requested: ``auto``, ``torch`` or ``numpy`` (:data:`ddcolor.registry.COLOUR_OPS`).
        device: The device the network runs on.

    Returns:
        ``torch`` or ``numpy``: ``auto`` is ``torch`` on a CUDA or ROCm GPU that torch can
        use, ``numpy`` on the CPU (measured faster there: docs/performance.md).

    Raises:
        ValueError: If ``requested`` is unknown.
    """
    if requested not in COLOUR_OPS:
        raise ValueError(f"unknown colour ops {requested!r}; use one of {', '.join(COLOUR_OPS)}")
    if requested != "auto":
        return requested
    on_gpu = device.type == "cuda" and torch.cuda.is_available()
    return "torch" if on_gpu else "numpy"


def device_image(
    image: np.ndarray, device: torch.device, math: ColorMath, colour_ops: str
) -> DeviceImage | None:
    """The image copied to the device, where the colour work is to run there.

    Args:
        image: HxW grey or HxWx3 RGB, uint8 or uint16.
        device: Where the network runs.
        math: Colour arithmetic.
        colour_ops: ``auto``, ``torch`` or ``numpy`` (:func:`resolve_colour_ops`).

    Returns:
        The image on the device; None where the colour work runs on the host, or the device
        has no room for the image (logged).

    Raises:
        ValueError: If ``colour_ops`` is unknown.
    """
    if resolve_colour_ops(colour_ops, device) != "torch":
        return None
    try:
        return DeviceImage(image, device, math)
    except torch.OutOfMemoryError:
        logger.warning(
            "no room on %s for a %s image; its colour work runs on the host", device, image.shape
        )
        return None


def _band_rows(width: int) -> int:
    return max(1, DEVICE_BAND_PIXELS // max(width, 1))


class DeviceImage:
    """An 8- or 16-bit image copied once to a device, and the colour work around the network.

    Args:
        image: HxW grey or HxWx3 RGB, uint8 or uint16.
        device: Where the network runs.
        math: Colour arithmetic: ``opencv`` for 8-bit, ``exact`` for 16-bit images.
    """

    def __init__(self, image: np.ndarray, device: torch.device, math: ColorMath) -> None:
        self.device = torch.device(device)
        self.dtype = image.dtype
        self.shape = image.shape
        self.math = math
        self._top = float(np.iinfo(image.dtype).max)
        self._pin = self.device.type == "cuda" and image.nbytes <= PIN_MAX_BYTES
        host = torch.from_numpy(_raw(np.ascontiguousarray(image)))
        if self._pin:
            host = host.pin_memory()
        self._pixels = host.to(self.device, non_blocking=self._pin)

    def _levels(self, rows: torch.Tensor | slice) -> torch.Tensor:
        """Rows of the image as int32 levels: HxW or HxWx3."""
        levels = self._pixels[rows].to(torch.int32)
        return levels & 0xFFFF if self.dtype == np.uint16 else levels

    def _unit_rows(self, rows: torch.Tensor) -> torch.Tensor:
        return unit_float(self._levels(rows), self.dtype)

    @torch.inference_mode()
    def network_input(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Make the network input, as :func:`ddcolor.pipeline.network_input` does.

        Args:
            size: Square side in pixels.

        Returns:
            1x3xSxS float32 grey RGB in [0, 1], and the SxS float32 L it was made from, both
            on the device.
        """
        source = (int(self.shape[0]), int(self.shape[1]))
        rows = _band_rows(max(size, source[1]))
        small = resize_bilinear(self._unit_rows, source, (size, size), self.device, rows)
        if small.ndim == 2:
            small = small[..., None].expand(size, size, 3)
        light = rgb_lightness(small, self.math)
        zeros = torch.zeros(light.shape + (2,), dtype=torch.float32, device=self.device)
        grey = lab_to_rgb(light, zeros, self.math)
        return grey.permute(2, 0, 1)[None].contiguous(), light

    def lightness(self, start: int, stop: int) -> torch.Tensor:
        """Full-resolution L of rows ``start:stop``, as :func:`ddcolor.colorspace.lightness`.

        Args:
            start: First row.
            stop: Row after the last.

        Returns:
            (stop-start)xW float32 L on the device.
        """
        levels = self._levels(slice(start, stop))
        if levels.ndim == 2:
            return grey_lightness(levels, self.dtype, self.math)
        return rgb_lightness(unit_float(levels, self.dtype), self.math)

    @torch.inference_mode()
    def compose(
        self, ab: torch.Tensor, light_small: torch.Tensor, upsample: UpsampleMethod
    ) -> np.ndarray:
        """Join the upsampled ab with the full-resolution L, band by band, into RGB.

        Args:
            ab: SxSx2 float32 ab as the network predicted it (on any device).
            light_small: SxS float32 L of the network input (:meth:`network_input`; on any
                device).
            upsample: How ab is brought to full resolution.

        Returns:
            HxWx3 RGB of the image's dtype, in host memory (pinned when it came from a GPU).

        Raises:
            ValueError: If ``upsample`` is unknown.
        """
        height, width = int(self.shape[0]), int(self.shape[1])
        grid, guide = ab.to(self.device), light_small.to(self.device)
        upsampler = TensorAbUpsampler(grid, (height, width), upsample, guide=guide)
        raw = torch.int16 if self.dtype == np.uint16 else torch.uint8
        if self.device.type == "cpu":
            output = np.empty((height, width, 3), dtype=self.dtype)
            host = torch.from_numpy(_raw(output))
        else:
            host = torch.empty((height, width, 3), dtype=raw, pin_memory=self._pin)
        step = _band_rows(width)
        for start in range(0, height, step):
            stop = min(start + step, height)
            light = self.lightness(start, stop)
            rgb = lab_to_rgb(light, upsampler.rows(start, stop, guide=light), self.math)
            levels = torch.round(rgb * self._top)
            if raw == torch.int16:  # levels above 32767 as int16 of the same bits
                levels = torch.where(levels >= 32768.0, levels - 65536.0, levels)
            host[start:stop].copy_(levels.to(raw), non_blocking=self._pin)
        if self.device.type == "cpu":
            return output
        # Waits with the interpreter lock released: decoding and encoding threads run on.
        torch.cuda.current_stream(self.device).synchronize()
        pixels = host.numpy()
        return pixels.view(np.uint16) if self.dtype == np.uint16 else pixels


def _raw(image: np.ndarray) -> np.ndarray:
    """uint16 pixels as int16 of the same bits (torch's uint16 lacks most operations)."""
    return image.view(np.int16) if image.dtype == np.uint16 else image
