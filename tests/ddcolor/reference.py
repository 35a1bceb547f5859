"""The published DDColor inference pipeline, written with OpenCV, as a yardstick for tests.

It follows the steps of upstream's ``ColorizationPipeline.process`` (github.com/piddnad/DDColor,
Apache-2.0) as facts, not as code: OpenCV's float32 Lab conversions, OpenCV's INTER_LINEAR
resize, PyTorch's default (nearest) interpolation for ab, and ``round`` to 8 bits. Upstream
works on BGR arrays from ``cv2.imread``; this takes RGB and converts, which changes nothing
numerically. OpenCV is a test-only dependency.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def reference_colorize(model: nn.Module, image: np.ndarray, size: int) -> np.ndarray:
    """Colorize like the published pipeline.

    Args:
        model: Takes 1x3xSxS float32 RGB in [0, 1], returns 1x2xSxS ab.
        image: HxWx3 uint8 RGB, or HxW uint8 grey (read as three equal channels, as
            ``cv2.imread`` does with grey files).
        size: Square network input size in pixels.

    Returns:
        HxWx3 uint8 RGB.
    """
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    height, width = image.shape[:2]
    bgr = np.ascontiguousarray(image[..., ::-1])
    unit = (bgr / 255.0).astype(np.float32)
    full_l = cv2.cvtColor(unit, cv2.COLOR_BGR2Lab)[:, :, :1]

    small = cv2.resize(unit, (size, size))
    small_l = cv2.cvtColor(small, cv2.COLOR_BGR2Lab)[:, :, :1]
    grey_lab = np.concatenate([small_l, np.zeros_like(small_l), np.zeros_like(small_l)], axis=-1)
    grey_rgb = cv2.cvtColor(grey_lab, cv2.COLOR_LAB2RGB)
    x = torch.from_numpy(grey_rgb.transpose(2, 0, 1)).float().unsqueeze(0)

    with torch.inference_mode():
        ab = model(x).cpu()
    ab_full = F.interpolate(ab, size=(height, width))[0].float().numpy().transpose(1, 2, 0)

    out_bgr = cv2.cvtColor(np.concatenate([full_l, ab_full], axis=-1), cv2.COLOR_LAB2BGR)
    out = (out_bgr * 255.0).round().astype(np.uint8)
    return np.ascontiguousarray(out[..., ::-1])
