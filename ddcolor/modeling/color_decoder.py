"""Multi-scale colour decoder of DDColor: learnt colour queries attending to image features.

Part of the DDColor network (Kang et al., "DDColor: Towards Photo-Realistic Image
Colorization via Dual Decoders", ICCV 2023; upstream github.com/piddnad/DDColor, whose
released weights are Apache-2.0 licensed).

A set of learnt queries is refined by ``dec_layers`` transformer layers. Layer ``i`` uses
the pixel decoder's feature map number ``i % num_scales`` (coarsest first) and runs, in this
order, cross-attention to that map, self-attention among the queries, then a feed-forward
layer. The normalised queries become colour embeddings through an MLP, and their dot product
with the full-resolution image features gives one channel per query.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ddcolor.modeling.layer_norm import LayerNorm
from ddcolor.modeling.transformer import (
    MLP,
    CrossAttentionLayer,
    FFNLayer,
    PositionEmbeddingSine,
    SelfAttentionLayer,
)

#: Linear layers (count) of the MLP that turns queries into colour embeddings.
COLOR_EMBED_LAYERS = 3


def _embedding(count: int, dim: int) -> nn.Embedding:
    """Return ``nn.Embedding(count, dim)`` initialised as torch does it, N(0, 1).

    On the meta device the initialisation is skipped: ``normal_`` on a meta tensor goes
    through torch's reference implementations and imports ``torch._dynamo`` on first use,
    about 1.5 s of start-up for every command that only needs the shapes.
    """
    weight = torch.empty(count, dim)
    if not weight.is_meta:
        nn.init.normal_(weight)
    return nn.Embedding(count, dim, _weight=weight)


class MultiScaleColorDecoder(nn.Module):
    """Transformer decoder from multi-scale image features to per-query colour maps.

    Args:
        in_channels: Channels of each feature scale, in the order they are passed.
        hidden_dim: Transformer width C.
        num_queries: Number of learnt colour queries Q.
        nheads: Attention heads.
        dim_feedforward: Hidden width of the feed-forward layers.
        dec_layers: Number of decoder layers.
        color_embed_dim: Width of the colour embeddings; must equal the channels of the
            image features passed to :meth:`forward`.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        *,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 9,
        color_embed_dim: int = 256,
    ) -> None:
        super().__init__()
        self.num_feature_levels = len(in_channels)
        self.num_layers = dec_layers
        self.num_queries = num_queries
        self.pe_layer = PositionEmbeddingSine(hidden_dim // 2)
        self.query_feat = _embedding(num_queries, hidden_dim)
        self.query_embed = _embedding(num_queries, hidden_dim)
        self.level_embed = _embedding(self.num_feature_levels, hidden_dim)
        projections = [nn.Conv2d(channels, hidden_dim, kernel_size=1) for channels in in_channels]
        for proj in projections:
            nn.init.kaiming_uniform_(proj.weight, a=1)
            assert proj.bias is not None
            nn.init.zeros_(proj.bias)
        self.input_proj = nn.ModuleList(projections)
        self.transformer_self_attention_layers = nn.ModuleList(
            SelfAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers)
        )
        self.transformer_cross_attention_layers = nn.ModuleList(
            CrossAttentionLayer(hidden_dim, nheads) for _ in range(dec_layers)
        )
        self.transformer_ffn_layers = nn.ModuleList(
            FFNLayer(hidden_dim, dim_feedforward) for _ in range(dec_layers)
        )
        self.decoder_norm = LayerNorm(hidden_dim)
        self.color_embed = MLP(hidden_dim, hidden_dim, color_embed_dim, COLOR_EMBED_LAYERS)

    def _memories(
        self, scales: Sequence[torch.Tensor]
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        memories, positions = [], []
        for level, (feature, proj) in enumerate(zip(scales, self.input_proj, strict=True)):
            positions.append(self.pe_layer(feature).flatten(2).transpose(1, 2))
            projected = proj(feature).flatten(2).transpose(1, 2)
            memories.append(projected + self.level_embed.weight[level])
        return memories, positions

    def forward(self, scales: Sequence[torch.Tensor], image_features: torch.Tensor) -> torch.Tensor:
        """Decode colour maps.

        Args:
            scales: ``num_feature_levels`` feature maps ``BxCixHixWi``, coarsest first.
            image_features: ``BxExHxW`` full-resolution features, E = ``color_embed_dim``.

        Returns:
            ``BxQxHxW`` colour maps, one per query.

        Raises:
            ValueError: If the number of scales is not ``num_feature_levels``.
        """
        if len(scales) != self.num_feature_levels:
            raise ValueError(
                f"expected {self.num_feature_levels} feature scales, got {len(scales)}"
            )
        memories, positions = self._memories(scales)
        batch = image_features.shape[0]
        query_pos = self.query_embed.weight.unsqueeze(0).expand(batch, -1, -1)
        queries = self.query_feat.weight.unsqueeze(0).expand(batch, -1, -1)
        for i in range(self.num_layers):
            level = i % self.num_feature_levels
            queries = self.transformer_cross_attention_layers[i](
                queries, memories[level], pos=positions[level], query_pos=query_pos
            )
            queries = self.transformer_self_attention_layers[i](queries, query_pos=query_pos)
            queries = self.transformer_ffn_layers[i](queries)
        color_embed = self.color_embed(self.decoder_norm(queries))
        return torch.einsum("bqc,bchw->bqhw", color_embed, image_features)
