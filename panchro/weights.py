"""Official DDColor checkpoints: where they are published, fetching one, finding it again.

The model library never downloads anything; this module does, on request only
(``panchro weights fetch NAME``). A download is streamed to a temporary file beside its
destination, validated as a DDColor checkpoint of the named model, and only then renamed
into place, with its sha256 written next to it. Commands that need weights and are given
none look for a fetched file before they give up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ddcolor.registry import OFFICIAL_MODELS

logger = logging.getLogger(__name__)

#: Where the official checkpoints are published: Hugging Face repositories piddnad/<name>.
DEFAULT_BASE_URL = "https://huggingface.co/piddnad"
#: File of each repository that holds the weights (a bare state dict).
PUBLISHED_FILE = "pytorch_model.bin"
#: Bytes read per chunk while downloading.
CHUNK_BYTES = 1 << 20
#: Seconds without data after which a download is abandoned.
TIMEOUT_S = 60.0


class WeightsError(Exception):
    """A checkpoint could not be fetched or found; the message says what to do."""


@dataclass(frozen=True)
class FetchedWeights:
    """A checkpoint on disk and what is known of it.

    Attributes:
        name: Official model name.
        path: The checkpoint file.
        sha256: Hex SHA-256 of the file.
        source: Where it was downloaded from.
    """

    name: str
    path: Path
    sha256: str
    source: str


def weights_url(name: str, base_url: str = DEFAULT_BASE_URL) -> str:
    """The download address of an official checkpoint.

    Args:
        name: One of :data:`ddcolor.registry.OFFICIAL_MODELS`.
        base_url: The publisher's base address.

    Returns:
        ``<base_url>/<name>/resolve/main/pytorch_model.bin``.

    Raises:
        WeightsError: If the name is not an official checkpoint.
    """
    if name not in OFFICIAL_MODELS:
        raise WeightsError(
            f"unknown model {name!r}; the official ones are {', '.join(OFFICIAL_MODELS)}"
        )
    return f"{base_url.rstrip('/')}/{name}/resolve/main/{PUBLISHED_FILE}"


def _manifest(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def fetch_weights(
    name: str,
    weights_dir: Path,
    *,
    base_url: str = DEFAULT_BASE_URL,
    on_progress: Callable[[int, int | None], None] | None = None,
) -> FetchedWeights:
    """Download an official checkpoint into ``weights_dir``, verify it, record its sha256.

    Args:
        name: One of :data:`OFFICIAL_MODELS`.
        weights_dir: Folder that keeps checkpoints (created if missing).
        base_url: The publisher's base address.
        on_progress: Told ``(bytes so far, total or None)`` while downloading.

    Returns:
        The verified checkpoint.

    Raises:
        WeightsError: If the download fails, is cut short, or is not a checkpoint of that
            model; nothing is left in ``weights_dir`` then.
    """
    from ddcolor.checkpoints import read_checkpoint
    from ddcolor.errors import DDColorError

    url = weights_url(name, base_url)
    weights_dir.mkdir(parents=True, exist_ok=True)
    target = weights_dir / f"{name}.bin"
    handle, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=weights_dir)
    temp = Path(temp_name)
    try:
        digest = _download(url, handle, on_progress)
        try:
            _, info = read_checkpoint(temp, model=name)
        except DDColorError as exc:
            raise WeightsError(f"{url} is not a usable {name} checkpoint: {exc}") from exc
        assert info.sha256 == digest  # the same bytes were hashed while they arrived
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _manifest(target).write_text(
        json.dumps({"name": name, "sha256": digest, "source": url}, indent=2) + "\n"
    )
    logger.info("fetched %s into %s, sha256 %s", name, target, digest)
    return FetchedWeights(name=name, path=target, sha256=digest, source=url)


def _download(url: str, handle: int, on_progress: Callable[[int, int | None], None] | None) -> str:
    digest = hashlib.sha256()
    received = 0
    request = urllib.request.Request(url, headers={"User-Agent": "panchro"})
    try:
        with (
            urllib.request.urlopen(request, timeout=TIMEOUT_S) as response,
            os.fdopen(handle, "wb") as out,
        ):
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            while chunk := response.read(CHUNK_BYTES):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                if on_progress is not None:
                    on_progress(received, total)
            out.flush()
            os.fsync(out.fileno())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        reason = getattr(exc, "reason", exc)
        raise WeightsError(
            f"could not download {url}: {reason}. Without internet access, download "
            f"{PUBLISHED_FILE} of that repository on another machine and pass it with "
            "--weights or PANCHRO_WEIGHTS."
        ) from exc
    if total is not None and received != total:
        raise WeightsError(f"download of {url} was cut short: {received} of {total} bytes")
    return digest.hexdigest()


def find_fetched(weights_dir: Path, name: str | None = None) -> FetchedWeights | None:
    """Find a checkpoint fetched earlier, the named one or the first official one present.

    Args:
        weights_dir: Folder that keeps checkpoints.
        name: A model name, or None for the first official model found.

    Returns:
        The checkpoint, or None when none was fetched.
    """
    for candidate in (name,) if name else OFFICIAL_MODELS:
        path = weights_dir / f"{candidate}.bin"
        manifest = _manifest(path)
        if path.is_file() and manifest.is_file():
            record = json.loads(manifest.read_text())
            return FetchedWeights(candidate, path, record["sha256"], record["source"])
    return None


def resolve_weights(
    weights: Path | None, weights_dir: Path, *, model: str | None, untrained: bool
) -> Path | None:
    """Choose the checkpoint a command runs with.

    Args:
        weights: The file given with ``--weights`` or ``PANCHRO_WEIGHTS``.
        weights_dir: Folder of fetched checkpoints, searched when none was given.
        model: The model asked for with ``--model``, if any.
        untrained: Random weights were asked for explicitly.

    Returns:
        The checkpoint file, or None with ``untrained``.

    Raises:
        WeightsError: If no checkpoint was given or fetched, saying how to get one.
    """
    if untrained:
        return None
    if weights is not None:
        return weights
    fetched = find_fetched(weights_dir, model)
    if fetched is not None:
        logger.info("using %s fetched into %s", fetched.name, fetched.path)
        return fetched.path
    raise WeightsError(
        "no DDColor checkpoint configured. Fetch the recommended one with `panchro weights "
        f"fetch {OFFICIAL_MODELS[0]}` (kept in {weights_dir}), or download {PUBLISHED_FILE} of "
        f"huggingface.co/piddnad/{OFFICIAL_MODELS[0]} on a machine with internet access and "
        "pass it with --weights or PANCHRO_WEIGHTS; or add --untrained to try panchro with "
        "random weights (meaningless colours)."
    )
