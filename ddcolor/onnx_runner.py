"""The ONNX Runtime backend: DDColor exported to ONNX once, cached, run by ONNX Runtime.

DDColor (Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual Decoders",
ICCV 2023; upstream github.com/piddnad/DDColor, weights under the Apache-2.0 licence) is
exported with torch's TorchScript-based exporter (``torch.onnx.export(dynamo=False)``: it needs
no package beyond torch and ``onnx``, and no network), with a dynamic batch and a dynamic
height and width (multiples of 32), and run in fp32.

The export is cached, keyed by :func:`export_key` (the checkpoint's SHA-256, the model name,
the opset, and the panchro and torch versions): beside the checkpoint when its folder can be
written, else (and for random weights) in a cache folder. A file is written under a temporary
name and linked into place, so a reader never sees half of one and nothing is ever written
over; a file in the way that panchro did not write (its ``panchro.export_key`` metadata is
missing or different) is left alone and the cache folder used instead.

Out of memory: the CPU execution provider has no ladder to climb down (the process's memory
is the limit), but :meth:`OnnxRunner.predict` maps an allocation failure of any execution
provider (CUDA's included, ``Failed to allocate memory`` / ``out of memory``) to
:class:`ddcolor.errors.NetworkOutOfMemory`, so the pipeline's size ladder applies unchanged.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
import warnings
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ddcolor.device import describe_device
from ddcolor.digests import UnsafeCacheDir, private_dir
from ddcolor.errors import DDColorError, NetworkOutOfMemory
from ddcolor.runners import check_ab

if TYPE_CHECKING:
    from torch import nn

    from ddcolor.checkpoints import CheckpointInfo

__all__ = [
    "EXPORT_KEY_PROPERTY",
    "ONNX_OPSET",
    "OnnxRunner",
    "default_cache_dir",
    "ensure_export",
    "export_key",
    "load_onnx_runner",
]

logger = logging.getLogger(__name__)

#: ONNX operator set of the export (LayerNormalization needs 17).
ONNX_OPSET = 17
#: Version of the export recipe; a change of it invalidates every cached file.
EXPORT_RECIPE = 1
#: Metadata property of an exported model holding its :func:`export_key`: panchro's mark.
EXPORT_KEY_PROPERTY = "panchro.export_key"
#: Input and output names of the exported graph.
INPUT_NAME, OUTPUT_NAME = "rgb", "ab"
#: Side of the example batch the export traces, in pixels (any multiple of 32 would do).
EXPORT_SIDE = 64
#: What ONNX Runtime's messages say when an allocation fails, on any execution provider.
_OUT_OF_MEMORY = re.compile(r"out of memory|failed to allocate", re.IGNORECASE)
#: Where the dependency comes from, for the message when it is missing.
_INSTALL_HINT = "install it with: pip install 'panchro[onnx]' (or onnxruntime-gpu on GPU nodes)"


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def export_key(model_name: str, checkpoint_sha256: str) -> str:
    """The cache key of an export: what went into it, hashed.

    Args:
        model_name: Registry name of the network.
        checkpoint_sha256: SHA-256 of the checkpoint, or a label of the random weights.

    Returns:
        Hex SHA-256 of the model name, the checkpoint, the opset, the recipe and the panchro
        and torch versions.
    """
    facts = {
        "model": model_name,
        "checkpoint": checkpoint_sha256,
        "opset": ONNX_OPSET,
        "recipe": EXPORT_RECIPE,
        "panchro": _package_version("panchro"),
        "torch": torch.__version__,
    }
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()


def default_cache_dir() -> Path:
    """This user's folder for exports of random weights and of checkpoints in read-only folders.

    Returns:
        ``panchro-onnx-UID`` in the system's temporary folder.
    """
    return Path(tempfile.gettempdir()) / f"panchro-onnx-{os.getuid()}"


def _import_runtime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:
        raise DDColorError(f"the onnx backend needs onnxruntime; {_INSTALL_HINT}") from exc
    return onnxruntime


def _written_by_panchro(path: Path, key: str) -> bool:
    """Whether ``path`` is an export panchro wrote for ``key``."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
        return False
    props = {prop.key: prop.value for prop in model.metadata_props}
    return props.get(EXPORT_KEY_PROPERTY) == key


def _export(model: nn.Module, path: Path, key: str) -> None:
    """Export ``model`` (on the CPU, fp32) to ``path`` with dynamic batch, height and width."""
    import onnx

    example = torch.rand(2, 3, EXPORT_SIDE, EXPORT_SIDE)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one (which needs
        # onnxscript); the tracer warns about the input checks, constant for a valid input.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
        )
    exported = onnx.load(str(path))
    exported.metadata_props.add(key=EXPORT_KEY_PROPERTY, value=key)
    onnx.save(exported, str(path))


def _write_export(model: nn.Module, target: Path, key: str) -> bool:
    """Export into ``target`` without ever writing over a file; False if one is in the way."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(handle)
    temporary = Path(name)
    try:
        _export(model, temporary, key)
        os.link(temporary, target)
    except FileExistsError:
        # Another process finished the same export first, or a file panchro did not write.
        return _written_by_panchro(target, key)
    finally:
        temporary.unlink(missing_ok=True)
    return True


def ensure_export(
    model: nn.Module,
    *,
    model_name: str,
    checkpoint: CheckpointInfo | None,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Return the cached ONNX export of a network, exporting it first if needed.

    Args:
        model: The float32 network in eval mode, on the CPU.
        model_name: Its registry name.
        checkpoint: The checkpoint it was loaded from; None for random weights.
        cache_dir: Folder for exports that cannot sit beside the checkpoint; None for
            :func:`default_cache_dir`.

    Returns:
        The ``.onnx`` file.

    Raises:
        DDColorError: If neither beside the checkpoint nor in the cache folder an export
            can be read or written.
    """
    weights = checkpoint.sha256 if checkpoint is not None else "untrained"
    key = export_key(model_name, weights)
    file_name = f"{model_name}.opset{ONNX_OPSET}.{key[:16]}.onnx"
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    places = [cache / file_name]
    if checkpoint is not None:
        places.insert(0, Path(checkpoint.path).parent / f"{Path(checkpoint.path).stem}.{file_name}")
    for target in places:
        if target.parent == cache:
            # Created for this user alone, or refused before anything in it is read: someone
            # else could have put an export there.
            try:
                private_dir(cache)
            except UnsafeCacheDir as exc:
                raise DDColorError(f"ONNX {exc}") from exc
            except OSError as exc:
                logger.warning("cannot write the ONNX export to %s: %s", cache, exc)
                continue
        if target.exists():
            if _written_by_panchro(target, key):
                logger.debug("using the ONNX export %s", target)
                return target
            logger.warning("%s was not written by panchro for these weights; leaving it", target)
            continue
        try:
            began = time.perf_counter()
            if _write_export(model, target, key):
                logger.info(
                    "exported %s to ONNX in %.1f s: %s",
                    model_name,
                    time.perf_counter() - began,
                    target,
                )
                return target
        except OSError as exc:
            logger.warning("cannot write the ONNX export to %s: %s", target.parent, exc)
    raise DDColorError(f"no place to read or write the ONNX export of {model_name}: {places}")


class OnnxRunner:
    """ONNX Runtime on an exported DDColor: fp32 only; see :class:`ddcolor.runners.NetworkRunner`.

    Args:
        path: The exported model (:func:`ensure_export`).
        device: ``cpu``, or ``cuda:N`` where ONNX Runtime has the CUDA execution provider.
        threads: Intra-op threads on the CPU; None for torch's current number.

    Raises:
        DDColorError: If onnxruntime is missing or lacks an execution provider for ``device``.
    """

    name = "onnx"
    precisions: tuple[str, ...] = ("fp32",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        threads: int | None = None,
    ) -> None:
        ort = _import_runtime()
        self.device = torch.device(device)
        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        if self.device.type == "cpu":
            providers: list[Any] = ["CPUExecutionProvider"]
        elif "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": self.device.index or 0})]
        else:
            raise DDColorError(
                f"this onnxruntime has no CUDA execution provider for {self.device}; install "
                "onnxruntime-gpu, or use --backend torch or --device cpu"
            )
        self.session = ort.InferenceSession(str(self.path), options, providers=providers)

    def predict(self, x: torch.Tensor, precision: str) -> tuple[torch.Tensor, str]:
        """One forward in fp32, whatever ``precision`` says; see :class:`NetworkRunner`."""
        del precision  # resolved to fp32 by the colorizer: the export is float32
        rgb = np.ascontiguousarray(x.detach().to("cpu", torch.float32).numpy())
        try:
            (ab,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: rgb})
        except Exception as exc:  # onnxruntime's errors share no base class but Exception
            if _OUT_OF_MEMORY.search(str(exc)):
                raise NetworkOutOfMemory(f"out of memory on {self.device}: {exc}") from None
            raise DDColorError(f"ONNX Runtime failed: {exc}") from exc
        return check_ab(torch.from_numpy(ab)), "fp32"

    def release_memory(self) -> None:
        """Nothing to give back: the session's arena is ONNX Runtime's own."""

    def label(self) -> str:
        """``onnx-`` and the device's backend: ``onnx-cpu``, ``onnx-cuda``."""
        return f"onnx-{describe_device(self.device).backend}"


def load_onnx_runner(
    model: nn.Module,
    *,
    model_name: str,
    checkpoint: CheckpointInfo | None,
    device: str | torch.device = "cpu",
    cache_dir: str | os.PathLike[str] | None = None,
) -> OnnxRunner:
    """Export (or find the cached export of) a network and open an ONNX Runtime session on it.

    Args:
        model: The float32 network in eval mode, on the CPU (it stays there).
        model_name: Its registry name.
        checkpoint: The checkpoint it was loaded from; None for random weights.
        device: Where ONNX Runtime runs it.
        cache_dir: See :func:`ensure_export`.

    Returns:
        The runner.

    Raises:
        DDColorError: If onnxruntime is missing, or the export cannot be read or written.
    """
    _import_runtime()
    path = ensure_export(model, model_name=model_name, checkpoint=checkpoint, cache_dir=cache_dir)
    return OnnxRunner(path, device)
