"""A training-free stand-in encoder for tests of the search and stream logic.

A random encoder cannot tell generated melodies apart; this one can without training: the
band profile of a log-mel segment, centred and randomly projected to d dimensions. It keeps the
encoder contract (B, 1, 256, 32) → unit (B, d), so it travels through the engine unchanged.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine.model.checkpoint import Checkpoint
from engine.model.encoders import EncoderConfig
from engine.model.encoders.heads import l2_normalize


class SpectralEncoder(nn.Module):
    def __init__(self, d: int = 64, seed: int = 0) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("projection", torch.randn(256, d, generator=generator))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        profile = x[:, 0].mean(-1)  # (B, 256): the segment's band profile, shift-tolerant
        return l2_normalize((profile - profile.mean(dim=1, keepdim=True)) @ self.projection)


def spectral_checkpoint(calibration: dict | None = None, d: int = 64) -> Checkpoint:
    return Checkpoint(
        path=Path("spectral-test-encoder.pt"),
        sha256="0" * 64,
        config=EncoderConfig(name="spectral-test", d=d),
        weights_sha256=f"spectral-test-{d}",
        backend="torch",
        model=SpectralEncoder(d).eval(),
        evaluation={"calibration": calibration} if calibration else {},
    )
