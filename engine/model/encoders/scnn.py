"""The seed's separable CNN (Chang et al. 2021): 8 blocks of 1×3 then 3×1 convolutions."""

from __future__ import annotations

import torch
from torch import nn

from engine.model.encoders.export_forms import channel_layer_norm, elu
from engine.model.encoders.heads import build_projection, l2_normalize

FULL_CHANNELS = (128, 128, 256, 256, 512, 512, 1024, 1024)
# (time stride of the 1×3 conv, frequency stride of the 3×1 conv) per block: 256×32 → 1×1.
STRIDES = ((2, 2), (2, 2), (2, 2), (2, 2), (1, 2), (2, 2), (1, 2), (2, 2))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over channels at each (freq, time) position, as the seed's Keras LayerNorm(-1)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export():
            return self.over_channel_axis(x)
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    def over_channel_axis(self, x: torch.Tensor) -> torch.Tensor:
        """The same normalisation computed in place on axis 1, the export's form
        (export_forms.channel_layer_norm); torch's eager LayerNorm is faster as above."""
        return channel_layer_norm(x, self.norm.weight, self.norm.bias, self.norm.eps)


class SeparableBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, time_stride: int, freq_stride: int) -> None:
        super().__init__()
        self.conv_t = nn.Conv2d(c_in, c_out, (1, 3), stride=(1, time_stride), padding=(0, 1))
        self.norm_t = ChannelLayerNorm(c_out)
        self.conv_f = nn.Conv2d(c_out, c_out, (3, 1), stride=(freq_stride, 1), padding=(1, 0))
        self.norm_f = ChannelLayerNorm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm_t(elu(self.conv_t(x)))
        return self.norm_f(elu(self.conv_f(x)))


def scaled_channels(width: float) -> tuple[int, ...]:
    """Channels at a width multiplier, rounded to multiples of 8 (width 0.25 → 32 … 256)."""
    return tuple(max(8, round(c * width / 8) * 8) for c in FULL_CHANNELS)


class SCNN(nn.Module):
    """log-mel (B, 1, 256, 32) → fingerprint (B, d), unit L2 norm."""

    def __init__(self, d: int, width: float = 1.0, projection: str = "divenc") -> None:
        super().__init__()
        channels = scaled_channels(width)
        blocks, c_in = [], 1
        for c_out, (ts, fs) in zip(channels, STRIDES, strict=True):
            blocks.append(SeparableBlock(c_in, c_out, ts, fs))
            c_in = c_out
        self.front = nn.Sequential(*blocks)
        self.embedding_dim = channels[-1]
        self.projection = build_projection(projection, channels[-1], d)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """The embedding h before the projection, (B, channels[-1])."""
        return self.front(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return l2_normalize(self.projection(self.embed(x)))
