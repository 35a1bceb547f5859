"""Which weights a worker runs, and whether they are the ones a collection was submitted for.

A collection records the weights it is meant for (``panchro submit --weights``, ``--model``
or ``--untrained``); a worker colorizes it only with those, and says so loudly in every
output and catalog row when its weights are random.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from catalog import UNTRAINED_CHECKPOINT
from workers.errors import CheckpointMismatch

if TYPE_CHECKING:
    from ddcolor.pipeline import Colorizer

__all__ = ["UNTRAINED_CHECKPOINT", "UNTRAINED_NOTE", "check_weights", "describe_weights"]

#: Appended to the model name in the metadata of every output made with random weights.
UNTRAINED_NOTE = "UNTRAINED random weights, colours are meaningless"


def describe_weights(colorizer: Colorizer, untrained: bool) -> tuple[str, str]:
    """Model name and checkpoint hash as recorded in outputs and the catalog.

    Args:
        colorizer: The loaded model.
        untrained: Whether its weights are random.

    Returns:
        ``(model name, checkpoint sha256)``; both say so loudly for random weights.
    """
    name = colorizer.model_name or "ddcolor"
    if untrained or colorizer.checkpoint is None:
        return f"{name} ({UNTRAINED_NOTE})", UNTRAINED_CHECKPOINT
    return name, colorizer.checkpoint.sha256


def check_weights(
    colorizer: Colorizer,
    untrained: bool,
    *,
    checkpoint_sha256: str | None,
    model_name: str | None = None,
    untrained_collection: bool = False,
) -> None:
    """Refuse to colorize a collection submitted for other weights than this worker's.

    A collection names its checkpoint by SHA-256; or only the model it must run
    (``submit --model``); or random weights (``submit --untrained``).

    Args:
        colorizer: This worker's model.
        untrained: Whether this worker runs random weights.
        checkpoint_sha256: The collection's checkpoint, if it names one.
        model_name: The model the collection must run with, if it names one.
        untrained_collection: The collection is meant for random weights.

    Raises:
        CheckpointMismatch: If this worker runs other weights than the collection's.
    """
    loaded = describe_weights(colorizer, untrained)[1]
    if untrained_collection and loaded != UNTRAINED_CHECKPOINT:
        raise CheckpointMismatch(
            "the collection was submitted for untrained random weights, but this worker runs "
            f"checkpoint sha256 {loaded[:12]}; the image is left for a worker started with "
            "--untrained"
        )
    if checkpoint_sha256 is None:
        if model_name is not None and colorizer.model_name != model_name:
            raise CheckpointMismatch(
                f"the collection was submitted for model {model_name}, but this worker "
                f"runs {colorizer.model_name}; the image is left for a worker started with "
                "that model's weights, or submit the collection again for this one"
            )
        return
    expected = checkpoint_sha256
    if loaded != expected:
        raise CheckpointMismatch(
            f"the collection was submitted for checkpoint sha256 {expected[:12]}, but this "
            f"worker runs {loaded[:12] if loaded != UNTRAINED_CHECKPOINT else 'random weights'}"
            "; the image is left for a worker started with that checkpoint (PANCHRO_WEIGHTS)"
            ", or submit the collection again with this worker's weights"
        )
