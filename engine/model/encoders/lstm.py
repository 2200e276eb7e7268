"""The LSTM encoder of the KAIST report: the log-mel read frame by frame, 256 bands per step."""

from __future__ import annotations

import torch
from torch import nn

from engine.core.features import N_MELS
from engine.model.encoders.heads import build_projection, l2_normalize

FULL_HIDDEN = 1024  # hidden units at width 1.0
LAYERS = 2


class LSTM(nn.Module):
    """log-mel (B, 1, 256, 32) → 32 steps of 256 → LSTM → last hidden state → g → (B, d)."""

    def __init__(self, d: int, width: float = 1.0, projection: str = "divenc") -> None:
        super().__init__()
        hidden = max(d, round(FULL_HIDDEN * width / d) * d)
        self.lstm = nn.LSTM(N_MELS, hidden, num_layers=LAYERS, batch_first=True)
        self.norm = nn.LayerNorm(hidden)
        self.projection = build_projection(projection, hidden, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x[:, 0].transpose(1, 2)  # (B, T, F)
        _, (h_n, _) = self.lstm(frames)
        return l2_normalize(self.projection(self.norm(h_n[-1])))
