"""A small ResNet encoder, the body of the KAIST report's attention + ResNet model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from engine.model.encoders.heads import build_projection, l2_normalize

FULL_CHANNELS = (64, 128, 256, 512)  # one stage each, stride 2 between stages, at width 1.0
STEM_STRIDE = (2, 1)  # 256×32 → 128×32: frequency is the long axis


def _norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: a contrastive batch is half replicas of the other half, and batch
    # statistics would leak which examples belong together.
    return nn.GroupNorm(min(8, channels), channels)


class ResidualBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.norm2 = _norm(c_out)
        self.skip = (
            nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(c_out))
            if stride != 1 or c_in != c_out
            else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(h)) + self.skip(x))


class ResNet(nn.Module):
    """log-mel (B, 1, 256, 32) → stem → 4 residual stages → global average → g → (B, d)."""

    def __init__(self, d: int, width: float = 1.0, projection: str = "divenc") -> None:
        super().__init__()
        channels = [max(8, round(c * width / 8) * 8) for c in FULL_CHANNELS]
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, stride=STEM_STRIDE, padding=1, bias=False),
            _norm(channels[0]),
            nn.ReLU(),
        )
        stages, c_in = [], channels[0]
        for i, c_out in enumerate(channels):
            stages.append(ResidualBlock(c_in, c_out, stride=1 if i == 0 else 2))
            c_in = c_out
        self.stages = nn.Sequential(*stages)
        self.projection = build_projection(projection, channels[-1], d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.stem(x)).mean(dim=(2, 3))
        return l2_normalize(self.projection(h))
