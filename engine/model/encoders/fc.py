"""The fully connected encoder of the KAIST report: the flattened log-mel through an MLP."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

from engine.core.features import N_FRAMES, N_MELS
from engine.model.encoders.heads import build_projection, l2_normalize

FULL_HIDDEN = (2048, 1024)  # at width 1.0; the report's "8192-512-256" family, scaled


class FC(nn.Module):
    """log-mel (B, 1, 256, 32) → flatten (8192) → hidden layers → g → (B, d), unit norm."""

    def __init__(self, d: int, width: float = 1.0, projection: str = "divenc") -> None:
        super().__init__()
        sizes = [N_MELS * N_FRAMES] + [max(d, round(h * width / d) * d) for h in FULL_HIDDEN]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.norms = nn.ModuleList(nn.LayerNorm(b) for b in sizes[1:])
        self.projection = build_projection(projection, sizes[-1], d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer, norm in zip(self.layers, self.norms, strict=True):
            h = norm(F.elu(layer(h)))
        return l2_normalize(self.projection(h))
