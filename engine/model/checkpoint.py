"""Checkpoints: weights plus everything needed to rebuild and trust them, in one file.

A checkpoint is a `.pt` file (engine.model.torch_backend: the training format) and, for inference,
its ONNX export (engine.model.onnx_backend: the same network with the same config, calibration and
reference in its metadata). This module holds what both share: the `Checkpoint` type, the
checks of a payload and where the shipped checkpoints are; it imports no backend and needs neither
torch nor ONNX Runtime. engine.model.load loads a checkpoint for inference.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.errors import CheckpointError
from engine.model.encoder_config import EncoderConfig
from engine.model.scoring import Scoring

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
DEFAULT_CHECKPOINT = "nfp-scnn-d128.pt"  # the shipped default; others sit beside it
CHECKPOINT_DIR_ENV = "NFP_CHECKPOINT_DIR"  # overrides where shipped checkpoints are looked up
MAX_D = 4096  # fingerprint dimensions; the encoders' embeddings are at most 1024 wide at width 1
MAX_WIDTH = 4.0  # channel multiplier: ≈ 1 GB of weights (width 1 is the paper's 15 M)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the network ready for inference and what travels with it."""

    path: Path  # the checkpoint the user named (its .pt, or an .onnx given directly)
    sha256: str  # of the .pt file: an export carries its source's
    config: EncoderConfig
    weights_sha256: str  # what decides the fingerprints: libraries are bound to it
    backend: str  # "torch" (model: an nn.Module) or "onnx" (model: an InferenceSession)
    model: Any
    training: dict = field(default_factory=dict)  # the training config and run facts
    evaluation: dict = field(default_factory=dict)  # harness summary, incl. score calibration
    # Fingerprints float32 (B, d) of music no library holds, for engine.query.search.noise_floor;
    # the harness makes them with the calibration, which assumes them. None: not calibrated.
    background: np.ndarray | None = None
    # Float32 fingerprints (15, d) of engine.model.probe's signal, made where the checkpoint was
    # saved: a machine whose own fingerprints differ (engine.model.fingerprint.check_reference) is
    # refused.
    reference: np.ndarray | None = None
    onnx_path: Path | None = None  # the export the model was read from (backend "onnx")
    # SHA-256 of the export's bytes that session was made from (backend "onnx"): what a stamp of
    # a check passed by exactly this model names (engine.model.verified).
    export_sha256: str | None = None

    @property
    def d(self) -> int:
        return self.config.d


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def show(value: object) -> str:
    """A crafted value for a one-line message: plain data as a short repr, anything else by type
    (a tensor's repr runs over many lines)."""
    if value is None or isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


def first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def parse_config(path: Path, payload: dict) -> EncoderConfig:
    """The payload's encoder_config, checked for sizes and types (the torch backend also
    checks that its encoder and projection are known; an export carries its own network)."""
    raw = payload.get("encoder_config")
    if not isinstance(raw, dict):
        raise CheckpointError(path, f"encoder_config is a {type(raw).__name__}, not a dict")
    known = {f.name for f in fields(EncoderConfig)}
    try:
        config = EncoderConfig(**{k: v for k, v in raw.items() if k in known})
    except TypeError as e:
        raise CheckpointError(path, f"bad encoder config: {e}") from e
    problem = config_problem(config)
    if problem:
        raise CheckpointError(path, f"bad encoder config: {problem}")
    return config


def config_problem(config: EncoderConfig) -> str | None:
    """Why the config cannot describe a model worth building, or None."""
    if not isinstance(config.name, str):
        return f"unknown encoder {show(config.name)}"
    if not isinstance(config.projection, str):
        return f"unknown projection {show(config.projection)}"
    if not is_int(config.d) or not 0 < config.d <= MAX_D:
        return f"d = {show(config.d)}, expected a whole number in 1…{MAX_D}"
    width = config.width
    if not is_real(width) or not 0 < width <= MAX_WIDTH:
        return f"width = {show(width)}, expected a number in (0, {MAX_WIDTH:g}]"
    return None


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: object) -> bool:
    """A finite int or float, not a bool (True would pass as 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)  # isfinite overflows on huge ints


def _parse_dict(path: Path, payload: dict, key: str) -> dict:
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CheckpointError(path, f"{key} is a {type(value).__name__}, not a dict")
    return dict(value)


def _parse_evaluation(path: Path, payload: dict) -> dict:
    """The evaluation summary; its calibration is what engine.query.search.evidence_threshold
    reads."""
    evaluation = _parse_dict(path, payload, "evaluation")
    calibration = evaluation.get("calibration")
    if calibration is None:
        return evaluation
    if not isinstance(calibration, dict):
        raise CheckpointError(path, f"calibration is a {type(calibration).__name__}, not a dict")
    try:
        Scoring.from_calibration(calibration)
    except ValueError as e:
        raise CheckpointError(path, f"calibration {e}") from e
    table = calibration.get("evidence_threshold")
    if table is None or (isinstance(table, dict) and not table):  # search uses its default table
        return evaluation
    problem = _threshold_problem(table)
    if problem:
        raise CheckpointError(path, f"calibration evidence_threshold: {problem}")
    return evaluation


def _threshold_problem(table: object) -> str | None:
    """Why `table` is not {n_segments: evidence} with positive whole n and finite evidence > 0."""
    if not isinstance(table, dict):
        return f"a {type(table).__name__}, not a mapping"
    for n, value in table.items():
        # Keys are str after a JSON round trip ("9"), int when written directly.
        if not (is_int(n) or (isinstance(n, str) and n.strip().isdecimal())) or int(n) <= 0:
            return f"segment count {show(n)} is not a positive whole number"
        if not is_real(value) or value <= 0:
            return f"threshold {show(value)} for {show(n)} segments is not finite and positive"
    return None


def _parse_rows(path: Path, payload: dict, key: str, d: int) -> np.ndarray | None:
    """Fingerprints float32 (rows, d) stored under key (background, reference), or None."""
    rows = payload.get(key)
    if rows is None:
        return None
    if not isinstance(rows, np.ndarray) or rows.ndim != 2 or rows.shape[1] != d:
        raise CheckpointError(path, f"{key} fingerprints are not (rows, {d})")
    if rows.dtype.kind != "f":
        raise CheckpointError(path, f"{key} fingerprints are not finite real numbers")
    # Converted first: the finite check on float16 (the export's background) takes twice as long,
    # and a float64 row too large for float32 must fail it too.
    rows = rows.astype(np.float32)
    if not np.isfinite(rows).all():
        raise CheckpointError(path, f"{key} fingerprints are not finite real numbers")
    return rows


def checkpoint_from_payload(
    path: Path, payload: dict, config: EncoderConfig, **found: Any
) -> Checkpoint:
    """A Checkpoint of `found` (sha256, weights_sha256, backend, model, …) and the payload's
    training, evaluation, background and reference (rows as numpy arrays), each checked."""
    evaluation = _parse_evaluation(path, payload)
    background = _parse_rows(path, payload, "background", config.d)
    rooms = Scoring.from_calibration(evaluation.get("calibration")).room_rows
    if rooms and (background is None or len(background) <= rooms):
        held = 0 if background is None else len(background)
        raise CheckpointError(path, f"its calibration counts {rooms} background rows of rooms, "
                                    f"but it holds {held} background rows")  # fmt: skip
    return Checkpoint(
        path=path,
        config=config,
        training=_parse_dict(path, payload, "training"),
        evaluation=evaluation,
        background=background,
        reference=_parse_rows(path, payload, "reference", config.d),
        **found,
    )


def checkpoint_dir() -> Path:
    """Where shipped checkpoints are: an override, else inside this package (in the source tree,
    an installed wheel and the frozen app alike)."""
    if os.environ.get(CHECKPOINT_DIR_ENV):
        return Path(os.environ[CHECKPOINT_DIR_ENV])
    return Path(__file__).resolve().parents[1] / "checkpoints"


def shipped_checkpoints() -> list[Path]:
    """All shipped checkpoints, the default first: each .pt, and each export without its .pt
    (the frozen app ships exports only)."""
    found = {p.with_suffix(".pt") if p.with_suffix(".pt").is_file() else p
             for p in checkpoint_dir().glob("*") if p.suffix in (".pt", ".onnx")}  # fmt: skip
    return sorted(found, key=lambda p: (p.stem != Path(DEFAULT_CHECKPOINT).stem, p.name))


def default_checkpoint_path() -> Path:
    """The default's .pt, or its export where only that is shipped."""
    path = checkpoint_dir() / DEFAULT_CHECKPOINT
    if path.is_file() or path.with_suffix(".onnx").is_file():
        return path if path.is_file() else path.with_suffix(".onnx")
    raise CheckpointError(path, "the default checkpoint is missing from this installation")
