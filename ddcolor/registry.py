"""The released DDColor models and their two architectures, without importing torch.

DDColor: Kang et al., "DDColor: Towards Photo-Realistic Image Colorization via Dual
Decoders", ICCV 2023; upstream code and weights at github.com/piddnad/DDColor, the weights
under the Apache-2.0 licence.

Two architectures exist: ``large`` (ConvNeXt-L encoder; checkpoints ``ddcolor_paper``,
``ddcolor_modelscope`` and ``ddcolor_artistic``) and ``tiny`` (ConvNeXt-T;
``ddcolor_paper_tiny``). Both use the released decoder settings: pixel-decoder width 512,
100 colour queries, 3 feature scales and 9 transformer layers, predicting 2 channels (ab).
Commands that only name or check a checkpoint (``panchro submit``) read this module and
:mod:`ddcolor.layout`; building a network is :mod:`ddcolor.build`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: Precisions the network can run in.
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "bf16")
#: Accepted precision names: the precisions plus ``auto``.
PRECISION_CHOICES: tuple[str, ...] = ("auto", *PRECISIONS)

#: Number of pixel-decoder scales (count) the colour decoder reads; fixed by the U-Net depth.
NUM_SCALES = 3


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of one DDColor model.

    Attributes:
        name: Registry name, e.g. ``ddcolor_modelscope``, or an architecture key.
        arch: Architecture key, ``large`` or ``tiny``; models with the same key share
            parameter names and shapes.
        encoder_depths: Blocks per ConvNeXt stage.
        encoder_dims: Channels per ConvNeXt stage.
        nf: Width of the pixel decoder.
        num_queries: Colour queries.
        num_scales: Pixel-decoder scales used by the colour decoder (must be 3).
        dec_layers: Transformer layers of the colour decoder.
        num_output_channels: Output channels (2: a and b).
        hidden_dim: Transformer width.
        nheads: Attention heads.
        dim_feedforward: Hidden width of the transformer feed-forward layers.
        description: One line on what the weights were trained on.
    """

    name: str
    arch: str
    encoder_depths: tuple[int, int, int, int]
    encoder_dims: tuple[int, int, int, int]
    nf: int = 512
    num_queries: int = 100
    num_scales: int = NUM_SCALES
    dec_layers: int = 9
    num_output_channels: int = 2
    hidden_dim: int = 256
    nheads: int = 8
    dim_feedforward: int = 2048
    description: str = ""

    def __post_init__(self) -> None:
        if self.num_scales != NUM_SCALES:
            raise ValueError(
                f"num_scales must be {NUM_SCALES} (one per pixel-decoder block), "
                f"got {self.num_scales}"
            )
        if self.nf % 2:
            raise ValueError(f"nf must be even, got {self.nf}")


#: Architectures, keyed by architecture name; each entry is also a valid model config.
ARCHITECTURES: dict[str, ModelConfig] = {
    "large": ModelConfig(
        name="large",
        arch="large",
        encoder_depths=(3, 3, 27, 3),
        encoder_dims=(192, 384, 768, 1536),
        description="DDColor-L (ConvNeXt-L encoder)",
    ),
    "tiny": ModelConfig(
        name="tiny",
        arch="tiny",
        encoder_depths=(3, 3, 9, 3),
        encoder_dims=(96, 192, 384, 768),
        description="DDColor-T (ConvNeXt-T encoder)",
    ),
}

#: The released checkpoints, keyed by their official names.
MODELS: dict[str, ModelConfig] = {
    "ddcolor_paper": replace(
        ARCHITECTURES["large"],
        name="ddcolor_paper",
        description="DDColor-L trained on ImageNet; the model of the paper",
    ),
    "ddcolor_modelscope": replace(
        ARCHITECTURES["large"],
        name="ddcolor_modelscope",
        description="DDColor-L trained on cleaned ImageNet; upstream's default",
    ),
    "ddcolor_artistic": replace(
        ARCHITECTURES["large"],
        name="ddcolor_artistic",
        description="DDColor-L trained on ImageNet plus artistic images",
    ),
    "ddcolor_paper_tiny": replace(
        ARCHITECTURES["tiny"],
        name="ddcolor_paper_tiny",
        description="DDColor-T trained on ImageNet",
    ),
}


def get_config(name_or_config: str | ModelConfig) -> ModelConfig:
    """Look up a model configuration.

    Args:
        name_or_config: A name of :data:`MODELS`, an architecture key of
            :data:`ARCHITECTURES`, or a :class:`ModelConfig` (returned as is).

    Returns:
        The configuration.

    Raises:
        ValueError: If the name is unknown.
    """
    if isinstance(name_or_config, ModelConfig):
        return name_or_config
    config = MODELS.get(name_or_config) or ARCHITECTURES.get(name_or_config)
    if config is None:
        known = ", ".join([*MODELS, *ARCHITECTURES])
        raise ValueError(f"unknown DDColor model {name_or_config!r}; known: {known}")
    return config
