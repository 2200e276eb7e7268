"""What conftest.py's tiny fixtures are made of, for tests that make their own variants: the
tiny encoder's configuration and checkpoint maker, and the lengths of the generated tracks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from engine.model.encoders import EncoderConfig, build_encoder
from engine.model.export import save_checkpoint
from engine.model.onnx_backend import background_path

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


def copy_checkpoint(pt: Path, to: Path) -> Path:
    """Copy the .pt `pt` to `to`, with its export and the export's background rows beside it
    where it has them (engine.model.onnx_backend.background_path); returns `to`."""
    shutil.copy(pt, to)
    export = pt.with_suffix(".onnx")
    if export.is_file():
        shutil.copy(export, to.with_suffix(".onnx"))
    if background_path(export).is_file():
        shutil.copy(background_path(export), background_path(to.with_suffix(".onnx")))
    return to
