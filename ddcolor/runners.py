"""The seam between the colorization pipeline and what runs the network.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023; upstream github.com/piddnad/DDColor, weights under the Apache-2.0 licence) is run by
a *runner*: it turns a Bx3xSxS float32 grey RGB batch in [0, 1] into Bx2xSxS float32 ab.
Everything around it (Lab conversion, resizing, the out-of-memory size ladder, upsampling)
is shared and lives in :mod:`ddcolor.pipeline`. Two runners exist:

- :class:`TorchRunner`, PyTorch (``--backend torch``): on the CPU the network prepared for
  inference (:mod:`ddcolor.prepared`: folded weights cast once, channels-last, the
  full-resolution head fused away) in fp32 or bf16; elsewhere eager, fp32 or fp16/bf16 by
  autocast; either with an fp32 redo when reduced precision gives NaN or Inf;
- ``OnnxRunner`` (:mod:`ddcolor.onnx_runner`, ``--backend onnx``): the network exported to
  ONNX and run by ONNX Runtime, in fp32.

A runner that runs out of device memory raises :class:`ddcolor.errors.NetworkOutOfMemory`
(the torch runner translates ``torch.OutOfMemoryError``; an ONNX Runtime execution provider
on a GPU would translate its allocation failure), and the pipeline answers with the next
smaller size of :data:`ddcolor.registry.OOM_LADDER`, whichever runner it is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch

from ddcolor.device import TORCH_DTYPES, describe_device
from ddcolor.errors import DDColorError, NetworkOutOfMemory
from ddcolor.modeling.ddcolor import DDColor
from ddcolor.prepared import PreparedDDColor
from ddcolor.registry import PRECISIONS

if TYPE_CHECKING:
    from torch import nn

__all__ = ["PREPARED_PRECISIONS", "NetworkRunner", "TorchRunner", "check_ab"]

logger = logging.getLogger(__name__)

#: Precisions the prepared network runs in (on the CPU); fp16 there stays eager autocast.
PREPARED_PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


@runtime_checkable
class NetworkRunner(Protocol):
    """What runs the network: Bx3xSxS float32 RGB in [0, 1] in, Bx2xSxS float32 ab out.

    Attributes:
        name: The backend, ``torch`` or ``onnx``.
        device: The torch device the batch is produced and consumed on.
        precisions: The precisions it can run in; others are run in fp32.
    """

    name: str
    device: torch.device
    precisions: tuple[str, ...]

    def predict(self, x: torch.Tensor, precision: str) -> tuple[torch.Tensor, str]:
        """Run the network on a batch.

        Args:
            x: Bx3xSxS float32 grey RGB in [0, 1], S a multiple of 32.
            precision: ``fp32``, ``fp16`` or ``bf16`` (already resolved for the device).

        Returns:
            Bx2xSxS float32 ab on the CPU or the runner's device, and the precision
            actually used.

        Raises:
            NetworkOutOfMemory: If the device ran out of memory (the pipeline tries a
                smaller size).
            DDColorError: If the network gave NaN or infinite ab even in fp32.
        """
        ...

    def release_memory(self) -> None:
        """Give cached device memory back after an out-of-memory error."""
        ...

    def label(self) -> str:
        """Name what ran the network for provenance: ``cuda``, ``cpu``, ``onnx-cpu``..."""
        ...


def check_ab(ab: torch.Tensor) -> torch.Tensor:
    """Refuse fp32 ab that holds NaN or Inf: the weights are damaged.

    Args:
        ab: Bx2xSxS float32 ab.

    Returns:
        ``ab`` unchanged.

    Raises:
        DDColorError: If any value is not finite.
    """
    if not bool(torch.isfinite(ab).all()):
        raise DDColorError("the network gave NaN or infinite ab in fp32; are the weights damaged?")
    return ab


class TorchRunner:
    """PyTorch: the network prepared for inference on the CPU, eager with autocast elsewhere.

    On the CPU (unless ``prepared=False``) a DDColor runs as a :class:`PreparedDDColor`,
    built on the first call in each precision of :data:`PREPARED_PRECISIONS`: measured at
    512 px on a 2-core AMD EPYC with AVX512-BF16 (one thread, CPU seconds per forward),
    tiny 5.0 eager fp32, 4.0 autocast bf16, 2.5 prepared fp32, 1.45 prepared bf16; its ab
    stay within 1e-6 (fp32) of the eager network's. Other modules, other devices and fp16
    run eagerly, reduced precision by autocast.

    Args:
        model: DDColor (or another network with its contract) in eval mode, on ``device``.
        device: Its device; None for the device of its parameters.
        prepared: Whether to run the prepared network; None for "on the CPU".
    """

    name = "torch"
    precisions: tuple[str, ...] = PRECISIONS

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device | None = None,
        *,
        prepared: bool | None = None,
    ) -> None:
        if device is None:
            param = next(model.parameters(), None)
            device = param.device if param is not None else torch.device("cpu")
        self.model = model
        self.device = torch.device(device)
        if prepared is None:
            prepared = self.device.type == "cpu"
        self.prepared = prepared and isinstance(model, DDColor)
        self._prepared: dict[str, PreparedDDColor] = {}

    def network(self, precision: str) -> PreparedDDColor | None:
        """The prepared network that runs ``precision``, built on first use; None if eager.

        Args:
            precision: ``fp32``, ``fp16`` or ``bf16``.

        Returns:
            The prepared network, or None where the eager network runs.
        """
        if not self.prepared or precision not in PREPARED_PRECISIONS:
            return None
        network = self._prepared.get(precision)
        if network is None:
            assert isinstance(self.model, DDColor)
            network = PreparedDDColor(self.model, TORCH_DTYPES[precision])
            self._prepared[precision] = network
            logger.debug("prepared DDColor for %s inference on %s", precision, self.device)
        return network

    def predict(self, x: torch.Tensor, precision: str) -> tuple[torch.Tensor, str]:
        """One forward; see :meth:`NetworkRunner.predict`. Redone in fp32 on NaN or Inf."""
        try:
            with torch.inference_mode():
                x = x.to(self.device)
                if precision != "fp32":
                    ab = self._forward(x, precision)
                    if bool(torch.isfinite(ab).all()):
                        return ab, precision
                    logger.warning("non-finite ab in %s; redoing the image in fp32", precision)
                    del ab
                return check_ab(self._forward(x, "fp32")), "fp32"
        except torch.OutOfMemoryError as exc:
            raise NetworkOutOfMemory(f"out of memory on {self.device}: {exc}") from None

    def _forward(self, x: torch.Tensor, precision: str) -> torch.Tensor:
        network = self.network(precision)
        if network is not None:
            return network(x)
        if precision == "fp32":
            ab: torch.Tensor = self.model(x).float()
            return ab
        with torch.autocast(device_type=self.device.type, dtype=TORCH_DTYPES[precision]):
            ab = self.model(x).float()
        return ab

    def release_memory(self) -> None:
        """Empty torch's CUDA cache (the CPU keeps nothing to give back)."""
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def label(self) -> str:
        """The device's backend: ``cuda``, ``rocm`` or ``cpu``."""
        return describe_device(self.device).backend
