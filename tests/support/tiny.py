"""What conftest.py's tiny fixtures are made of, for tests that make their own variants: the
tiny encoder's configuration and checkpoint maker, and the lengths of the generated tracks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from engine.model.encoders import EncoderConfig, build_encoder
from engine.model.export import save_checkpoint

TINY_CONFIG = EncoderConfig(name="scnn", d=64, width=0.0625)
TRACK_SECONDS = (20.0, 26.0, 17.0)


def make_tiny_checkpoint(
    path: Path, seed: int = 0, evaluation: dict | None = None, background: np.ndarray | None = None
) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(
        path,
        build_encoder(TINY_CONFIG),
        TINY_CONFIG,
        evaluation=evaluation or {},
        training={"note": "random initialisation for tests"},
        background=background,
    )
    return path
