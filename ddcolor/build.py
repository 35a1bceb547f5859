"""Building a DDColor network from one of the configurations in :mod:`ddcolor.registry`.

The registry's names are re-exported here, where they were first defined.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from ddcolor.modeling.ddcolor import DDColor
from ddcolor.registry import ARCHITECTURES, MODELS, NUM_SCALES, ModelConfig, get_config

if TYPE_CHECKING:
    from os import PathLike

__all__ = [
    "ARCHITECTURES",
    "MODELS",
    "NUM_SCALES",
    "ModelConfig",
    "build_ddcolor",
    "create_model",
    "get_config",
]

logger = logging.getLogger(__name__)


def create_model(config: ModelConfig) -> DDColor:
    """Construct a randomly initialised DDColor for ``config`` on the default device.

    Run it under ``with torch.device("meta"):`` to get parameter shapes without memory.

    Args:
        config: The model configuration.

    Returns:
        The model, in training mode as every new ``nn.Module``.
    """
    return DDColor(
        encoder_depths=config.encoder_depths,
        encoder_dims=config.encoder_dims,
        nf=config.nf,
        num_queries=config.num_queries,
        dec_layers=config.dec_layers,
        num_output_channels=config.num_output_channels,
        hidden_dim=config.hidden_dim,
        nheads=config.nheads,
        dim_feedforward=config.dim_feedforward,
    )


def build_ddcolor(
    name_or_config: str | ModelConfig,
    *,
    weights: str | PathLike[str] | None = None,
    device: str | torch.device = "cpu",
) -> DDColor:
    """Build a DDColor model in eval mode, optionally with weights from a checkpoint.

    Without ``weights`` the model is randomly initialised (for tests and shape checks).
    With them the checkpoint is read, validated against ``name_or_config`` and loaded
    strictly, as :func:`ddcolor.checkpoints.load_model` does; the model stays float32.

    Args:
        name_or_config: A name of :data:`MODELS`, an architecture key, or a config.
        weights: Path of a checkpoint (``.pth``, ``.pt``, ``.bin`` or ``.safetensors``).
        device: Device to put the model on.

    Returns:
        The model in eval mode.

    Raises:
        ValueError: If the name is unknown.
        CheckpointError: If the checkpoint cannot be read or does not fit the config.
    """
    config = get_config(name_or_config)
    if weights is not None:
        # Imported here because ddcolor.checkpoints builds models with this module.
        from ddcolor.checkpoints import load_model

        return load_model(weights, device=device, model=config)
    model = create_model(config).to(device)
    logger.debug("built untrained DDColor %s on %s", config.name, device)
    return model.eval()
