"""The seed's separable CNN (Chang et al. 2021): 8 blocks of 1×3 then 3×1 convolutions."""

from __future__ import annotations

import torch
from torch import nn

from engine.model.encoders.export_forms import channel_layer_norm, elu
from engine.model.encoders.heads import build_projection, l2_normalize

FULL_CHANNELS = (128, 128, 256, 256, 512, 512, 1024, 1024)
# scnn_lite's first block at this share of its width's channels. The first block's 3×1
# convolution runs over 128 × 16 positions, a third of the quarter-width encoder's 19.3 M
# multiply-adds; at half its channels (16) the encoder needs 12.8 M, and a 5 s query's call
# 13.7 against 23.6-30.4 CPU ms on ONNX Runtime (`bench/bench_width.py --encoders
# scnn_lite,scnn --widths 0.25`, docs/encoders.md). In a one-off trial 24 channels (15.6 M)
# saved only 8 %: 16 fill one AVX-512 register of float32, the blocking ONNX Runtime uses.
LITE_FIRST_BLOCK_SHARE = 0.5
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


def scaled_channels(width: float, first_block_share: float = 1.0) -> tuple[int, ...]:
    """Channels at a width multiplier, rounded to multiples of 8 (width 0.25 → 32 … 256), the
    first block's scaled once more by first_block_share."""
    shares = (first_block_share,) + (1.0,) * (len(FULL_CHANNELS) - 1)
    return tuple(
        max(8, round(c * width * s / 8) * 8) for c, s in zip(FULL_CHANNELS, shares, strict=True)
    )


class SCNN(nn.Module):
    """log-mel (B, 1, 256, 32) → fingerprint (B, d), unit L2 norm."""

    def __init__(
        self, d: int, width: float = 1.0, projection: str = "divenc", first_block_share: float = 1.0
    ) -> None:
        super().__init__()
        channels = scaled_channels(width, first_block_share)
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
