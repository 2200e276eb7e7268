"""Checkpoints: weights plus everything needed to rebuild and trust them, in one file.

A checkpoint is loaded with `torch.load(weights_only=True)`, so a file crafted to run code when
unpickled is refused instead of executed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.encoders import EncoderConfig, build_encoder
from engine.errors import CheckpointError

FORMAT_VERSION = 1
DEFAULT_CHECKPOINT = "nfp-scnn-d128.pt"  # the shipped default; others sit beside it
CHECKPOINT_DIR_ENV = "NFP_CHECKPOINT_DIR"  # overrides where shipped checkpoints are looked up


@dataclass
class Checkpoint:
    """A loaded checkpoint: the model in eval mode and what travels with it."""

    path: Path
    sha256: str
    config: EncoderConfig
    model: nn.Module
    training: dict = field(default_factory=dict)  # the training config and run facts
    evaluation: dict = field(default_factory=dict)  # harness summary, incl. score calibration
    # Fingerprints float32 (B, d) of music no library holds, for engine.search.noise_floor;
    # the harness makes them with the calibration, which assumes them. None: not calibrated.
    background: np.ndarray | None = None

    @property
    def d(self) -> int:
        return self.config.d

    @functools.cached_property
    def weights_sha256(self) -> str:
        """What decides the fingerprints: the encoder config and weights, and nothing stored
        beside them, so re-evaluating a checkpoint leaves the libraries it built valid."""
        digest = hashlib.sha256(json.dumps(self.config.to_dict(), sort_keys=True).encode())
        for name, tensor in sorted(self.model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    config: EncoderConfig,
    *,
    training: dict | None = None,
    evaluation: dict | None = None,
    background: np.ndarray | None = None,
) -> None:
    """Write atomically (temp file, fsync, rename), so a crash never leaves half a checkpoint.

    `background` float32 (B, d) is stored as float16: it only sets a noise floor.
    """
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "encoder": config.name,
        "encoder_config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training or {},
        "evaluation": evaluation or {},
    }
    if background is not None:
        payload["background"] = torch.from_numpy(np.asarray(background, np.float16))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Rebuild the model a checkpoint describes; CheckpointError names the file and cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for bad pickles; all mean "not loadable"
        cause = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise CheckpointError(path, f"refused or unreadable: {cause}") from e
    config = _parse_config(path, payload)
    try:
        model = build_encoder(config)
        model.load_state_dict(payload["state_dict"])
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(path, f"weights do not fit {config.name}: {str(e)[:200]}") from e
    model.eval()
    return Checkpoint(
        path=path,
        sha256=file_sha256(path),
        config=config,
        model=model,
        training=dict(payload.get("training") or {}),
        evaluation=dict(payload.get("evaluation") or {}),
        background=_parse_background(path, payload, config.d),
    )


def _parse_config(path: Path, payload: object) -> EncoderConfig:
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(path, "no state_dict inside")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(path, f"format version {version!r}, expected {FORMAT_VERSION}")
    raw = payload.get("encoder_config") or {}
    known = {f.name for f in fields(EncoderConfig)}
    try:
        return EncoderConfig(**{k: v for k, v in raw.items() if k in known})
    except TypeError as e:
        raise CheckpointError(path, f"bad encoder config: {e}") from e


def _parse_background(path: Path, payload: dict, d: int) -> np.ndarray | None:
    background = payload.get("background")
    if background is None:
        return None
    if not isinstance(background, torch.Tensor) or background.ndim != 2 or background.shape[1] != d:
        raise CheckpointError(path, f"background fingerprints are not (rows, {d})")
    return background.float().numpy()


def checkpoint_dir() -> Path:
    """Where shipped checkpoints are: an override, the frozen app's bundle, or the source tree."""
    if os.environ.get(CHECKPOINT_DIR_ENV):
        return Path(os.environ[CHECKPOINT_DIR_ENV])
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        return Path(bundle) / "assets" / "checkpoints"
    return Path(__file__).resolve().parents[1] / "assets" / "checkpoints"


def shipped_checkpoints() -> list[Path]:
    """All shipped checkpoints, the default first."""
    found = sorted(checkpoint_dir().glob("*.pt"))
    return sorted(found, key=lambda p: p.name != DEFAULT_CHECKPOINT)


def default_checkpoint_path() -> Path:
    path = checkpoint_dir() / DEFAULT_CHECKPOINT
    if not path.is_file():
        raise CheckpointError(path, "the default checkpoint is missing from this installation")
    return path
