"""Transformer parts of DDColor's colour decoder.

Part of the DDColor network (Kang et al., "DDColor: Towards Photo-Realistic Image
Colorization via Dual Decoders", ICCV 2023; upstream github.com/piddnad/DDColor, whose
released weights are Apache-2.0 licensed). The layer design follows Mask2Former's
transformer decoder (Cheng et al., CVPR 2022) and DETR's sine position encoding (Carion et
al., ECCV 2020).

All layers are post-norm (``norm(x + sublayer(x))``) without dropout, as in the released
models, and work on batch-first ``BxLxC`` sequences. Attention scores and their softmax are
computed in float32 with autocast off, and the position encoding is built in float32 and
cast to the features' dtype, so the decoder runs in float16 and bfloat16 without overflow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ddcolor.modeling.layer_norm import LayerNorm

#: Wavelength base (dimensionless) of the sine position encoding.
POSITION_TEMPERATURE = 10000.0
#: Range (radians) that normalised positions are scaled to.
POSITION_SCALE = 2 * math.pi
#: Epsilon (pixels) added to the last cumulative position before normalising.
POSITION_EPS = 1e-6


class PositionEmbeddingSine(nn.Module):
    """Fixed 2-D sine/cosine position encoding of a feature map.

    For a pixel at row y and column x (counted from 1) the encoding is the concatenation of
    ``num_pos_feats`` values for y then as many for x. Positions are normalised to
    ``(0, 2*pi]`` by the map's height or width; value ``2k`` is ``sin(p / T**(2k/F))`` and
    value ``2k+1`` is ``cos`` of the same angle, with ``T`` the temperature and ``F`` the
    number of features.

    Args:
        num_pos_feats: Encoding values per axis (half the output channels).
        temperature: Wavelength base T.
    """

    def __init__(self, num_pos_feats: int, temperature: float = POSITION_TEMPERATURE) -> None:
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature

    def _axis(self, length: int, device: torch.device) -> torch.Tensor:
        positions = torch.arange(1, length + 1, dtype=torch.float32, device=device)
        positions = positions / (positions[-1:] + POSITION_EPS) * POSITION_SCALE
        index = torch.arange(self.num_pos_feats, dtype=torch.float32, device=device)
        wavelengths = self.temperature ** (
            2 * torch.div(index, 2, rounding_mode="floor") / self.num_pos_feats
        )
        angles = positions[:, None] / wavelengths
        return torch.stack((angles[:, 0::2].sin(), angles[:, 1::2].cos()), dim=2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Encode the positions of a ``BxCxHxW`` feature map (its values are not used).

        Args:
            x: ``BxCxHxW`` features; only H, W, device and dtype matter.

        Returns:
            ``1x(2*num_pos_feats)xHxW`` encoding in the dtype of ``x`` (built in float32).
        """
        height, width = x.shape[-2:]
        rows = self._axis(height, x.device)
        cols = self._axis(width, x.device)
        features = self.num_pos_feats
        pos = torch.cat(
            (
                rows[:, None, :].expand(height, width, features),
                cols[None, :, :].expand(height, width, features),
            ),
            dim=2,
        )
        return pos.permute(2, 0, 1).unsqueeze(0).to(x.dtype)


class MultiHeadAttention(nn.Module):
    """Multi-head attention with the parameter names of ``nn.MultiheadAttention``.

    Holds ``in_proj_weight``/``in_proj_bias`` (query, key and value projections stacked)
    and ``out_proj``, so upstream weights load unchanged, but computes the attention in
    float32 with autocast off, whatever the module's dtype.

    Args:
        embed_dim: Model width C.
        num_heads: Number of heads; must divide C.
    """

    def __init__(self, embed_dim: int, num_heads: int) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim))
        self.out_proj = nn.Linear(embed_dim, embed_dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        head_dim = self.embed_dim // self.num_heads
        return x.reshape(batch, length, self.num_heads, head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        """Attend from ``BxLxC`` queries to ``BxSxC`` keys and values.

        Args:
            query: ``BxLxC`` queries.
            key: ``BxSxC`` keys.
            value: ``BxSxC`` values.

        Returns:
            ``BxLxC`` attention output.
        """
        w_q, w_k, w_v = self.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.in_proj_bias.chunk(3)
        q = self._split_heads(F.linear(query, w_q, b_q))
        k = self._split_heads(F.linear(key, w_k, b_k))
        v = self._split_heads(F.linear(value, w_v, b_v))
        with torch.autocast(device_type=q.device.type, enabled=False):
            attended = F.scaled_dot_product_attention(q.float(), k.float(), v.float())
        batch, _, length, _ = attended.shape
        merged = attended.transpose(1, 2).reshape(batch, length, self.embed_dim).to(v.dtype)
        out: torch.Tensor = self.out_proj(merged)
        return out


class CrossAttentionLayer(nn.Module):
    """Post-norm cross-attention: ``norm(q + attn(q + query_pos, m + pos, m))``.

    Args:
        d_model: Model width C.
        nhead: Number of attention heads.
    """

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.multihead_attn = MultiHeadAttention(d_model, nhead)
        self.norm = LayerNorm(d_model)

    def forward(
        self,
        tgt: torch.Tensor,
        memory: torch.Tensor,
        *,
        pos: torch.Tensor | None = None,
        query_pos: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Let ``BxQxC`` queries attend to ``BxSxC`` image features.

        Args:
            tgt: ``BxQxC`` queries.
            memory: ``BxSxC`` image features (keys and values).
            pos: ``BxSxC`` (or broadcastable) position encoding added to the keys.
            query_pos: ``BxQxC`` (or broadcastable) embedding added to the queries.

        Returns:
            ``BxQxC`` updated queries.
        """
        attended = self.multihead_attn(_with_pos(tgt, query_pos), _with_pos(memory, pos), memory)
        out: torch.Tensor = self.norm(tgt + attended)
        return out


class SelfAttentionLayer(nn.Module):
    """Post-norm self-attention: ``norm(x + attn(x + query_pos, x + query_pos, x))``.

    Args:
        d_model: Model width C.
        nhead: Number of attention heads.
    """

    def __init__(self, d_model: int, nhead: int) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, nhead)
        self.norm = LayerNorm(d_model)

    def forward(self, tgt: torch.Tensor, *, query_pos: torch.Tensor | None = None) -> torch.Tensor:
        """Let ``BxQxC`` queries attend to each other.

        Args:
            tgt: ``BxQxC`` queries.
            query_pos: ``BxQxC`` (or broadcastable) embedding added to queries and keys.

        Returns:
            ``BxQxC`` updated queries.
        """
        q = _with_pos(tgt, query_pos)
        out: torch.Tensor = self.norm(tgt + self.self_attn(q, q, tgt))
        return out


class FFNLayer(nn.Module):
    """Post-norm feed-forward layer: ``norm(x + linear2(relu(linear1(x))))``.

    Args:
        d_model: Model width C.
        dim_feedforward: Hidden width.
    """

    def __init__(self, d_model: int, dim_feedforward: int) -> None:
        super().__init__()
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm = LayerNorm(d_model)
        nn.init.xavier_uniform_(self.linear1.weight)
        nn.init.xavier_uniform_(self.linear2.weight)

    def forward(self, tgt: torch.Tensor) -> torch.Tensor:
        """Transform each of the ``BxQxC`` queries.

        Args:
            tgt: ``BxQxC`` queries.

        Returns:
            ``BxQxC`` updated queries.
        """
        out: torch.Tensor = self.norm(tgt + self.linear2(F.relu(self.linear1(tgt))))
        return out


class MLP(nn.Module):
    """A stack of linear layers with ReLU between them (none after the last).

    Args:
        input_dim: Input width.
        hidden_dim: Width of the hidden layers.
        output_dim: Output width.
        num_layers: Number of linear layers.
    """

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> None:
        super().__init__()
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(n_in, n_out) for n_in, n_out in zip(widths[:-1], widths[1:], strict=True)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``...xinput_dim`` to ``...xoutput_dim``.

        Args:
            x: ``...xinput_dim`` tensor.

        Returns:
            ``...xoutput_dim`` tensor.
        """
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            x = layer(x)
            if index < last:
                x = F.relu(x)
        return x


def _with_pos(x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    return x if pos is None else x + pos
