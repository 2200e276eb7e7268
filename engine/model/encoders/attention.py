"""Temporal–spectral attention in front of an encoder (Singh et al., ISMIR 2022; KAIST report
eqs. 3–5): one softmax over time and one over frequency, both computed from the input, combined
into a map that is multiplied onto the log-mel.

Scores come from shared linear maps: each time frame's spectrum → one temporal score, each band's
envelope → one spectral score. The outer product of the two softmaxes is scaled by F·T so that a
uniform attention leaves the input unchanged; the encoder behind it sees the reweighted input.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.core.features import N_FRAMES, N_MELS


class TemporalSpectralAttention(nn.Module):
    def __init__(self, n_mels: int = N_MELS, n_frames: int = N_FRAMES) -> None:
        super().__init__()
        self.temporal = nn.Linear(n_mels, 1)  # a frame's spectrum → how much that frame matters
        self.spectral = nn.Linear(n_frames, 1)  # a band's envelope → how much that band matters

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        """The attention map (B, 1, F, T), mean 1 over each example."""
        spec = x[:, 0]  # (B, F, T)
        a_t = torch.softmax(self.temporal(spec.transpose(1, 2)).squeeze(-1), dim=-1)  # (B, T)
        a_f = torch.softmax(self.spectral(spec).squeeze(-1), dim=-1)  # (B, F)
        n_f, n_t = spec.shape[1:]
        return (a_f.unsqueeze(-1) * a_t.unsqueeze(1) * (n_f * n_t)).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weights(x)


class Attended(nn.Module):
    """Attention in front of any encoder with the standard interface."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.attention = TemporalSpectralAttention()
        self.encoder = encoder

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.attention(x))
