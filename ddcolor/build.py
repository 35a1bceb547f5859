"""Building a DDColor network from a configuration of :mod:`ddcolor.registry`.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and weights at github.com/piddnad/DDColor, the weights
under the Apache-2.0 licence. As segment-anything's ``build_sam``: reading a checkpoint
(:func:`ddcolor.checkpoints.read_checkpoint`) returns the state dict and its provenance;
:func:`build_ddcolor` constructs the network, loads the state dict strictly and returns the
network in eval mode.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch

from ddcolor.layout import compare_layout, layout_of
from ddcolor.modeling.ddcolor import DDColor
from ddcolor.registry import ModelConfig, get_config

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["build_ddcolor", "create_model"]

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
    state_dict: Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device = "cpu",
) -> DDColor:
    """Build a DDColor network in eval mode, with the weights of a state dict if given.

    Without ``state_dict`` the network is randomly initialised (for tests and shape checks).
    With one (from :func:`ddcolor.checkpoints.read_checkpoint`, which also returns the
    file's provenance record for the caller to keep) the network is built without random
    initialisation and the weights are loaded with ``strict=True``; it stays float32.

    Args:
        name_or_config: A name of :data:`MODELS`, an architecture key, or a config.
        state_dict: The weights, every key of the network and no other.
        device: Device to put the network on.

    Returns:
        The network in eval mode.

    Raises:
        ValueError: If the name is unknown.
        CheckpointError: If the state dict does not have exactly the network's keys,
            shapes and kinds of dtype.
    """
    config = get_config(name_or_config)
    if state_dict is None:
        model = create_model(config).to(device)
        logger.debug("built untrained DDColor %s on %s", config.name, device)
        return model.eval()
    with torch.device("meta"):
        model = create_model(config)
    compare_layout(
        layout_of(state_dict),
        layout_of(model.state_dict()),
        target=config.name,
        source="the state dict",
    )
    model.load_state_dict(state_dict, strict=True, assign=True)
    logger.debug("built DDColor %s with its weights on %s", config.name, device)
    # Weights saved in half precision are computed in float32 too (autocast reduces it).
    return model.to(device=device, dtype=torch.float32).eval()
