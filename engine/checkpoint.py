"""Checkpoints: weights plus everything needed to rebuild and trust them, in one file.

A checkpoint is loaded with `torch.load(weights_only=True)`, so a file crafted to run code when
unpickled is refused instead of executed.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import pickle
import sys
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.encoders import ENCODERS, EncoderConfig, build_encoder
from engine.encoders.heads import PROJECTIONS
from engine.errors import CheckpointError
from engine.probe import reference_fingerprints

FORMAT_VERSION = 1
DEFAULT_CHECKPOINT = "nfp-scnn-d128.pt"  # the shipped default; others sit beside it
CHECKPOINT_DIR_ENV = "NFP_CHECKPOINT_DIR"  # overrides where shipped checkpoints are looked up
MAX_D = 4096  # fingerprint dimensions; the encoders' embeddings are at most 1024 wide at width 1
MAX_WIDTH = 4.0  # channel multiplier: ≈ 1 GB of weights (width 1 is the paper's 15 M)
REFUSED_CODE = (
    "refused: it contains code or objects other than tensors and plain data "
    "(a checkpoint must be loadable with weights_only)"
)


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
    # Float32 fingerprints (15, d) of engine.probe's signal, made where the checkpoint was saved:
    # a machine whose own fingerprints differ (engine.fingerprint.check_reference) is refused.
    reference: np.ndarray | None = None

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

    `background` float32 (B, d) is stored as float16: it only sets a noise floor. The model's
    float32 fingerprints of the probe signal go in as the reference every machine checks.
    """
    path = Path(path)
    payload = {
        "format_version": FORMAT_VERSION,
        "encoder": config.name,
        "encoder_config": config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "training": training or {},
        "evaluation": evaluation or {},
        "reference": torch.from_numpy(reference_fingerprints(model)),
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
    """Rebuild the model a checkpoint describes; CheckpointError names the file and cause.

    Every part of the payload is checked before use, so a malformed file is refused with one
    reason instead of failing later, far from its cause.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    payload = _read_payload(path)
    config = _parse_config(path, payload)
    state_dict = _parse_state_dict(path, payload)
    evaluation = _parse_evaluation(path, payload)
    training = _parse_dict(path, payload, "training")
    try:
        model = build_encoder(config)
        model.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(path, f"weights do not fit {config.name}: {_first_line(e)}") from e
    background = _parse_rows(path, payload, "background", config.d)
    reference = _parse_rows(path, payload, "reference", config.d)
    model.eval()
    return Checkpoint(
        path=path,
        sha256=file_sha256(path),
        config=config,
        model=model,
        training=training,
        evaluation=evaluation,
        background=background,
        reference=reference,
    )


def _show(value: object) -> str:
    """A crafted value for a one-line message: plain data as a short repr, anything else by type
    (a tensor's repr runs over many lines)."""
    if value is None or isinstance(value, str | int | float):
        text = repr(value)
        return text if len(text) <= 60 else text[:57] + "..."
    return f"a {type(value).__name__}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _read_payload(path: Path) -> dict:
    try:
        with warnings.catch_warnings():
            # A plain pickle also draws a multi-line protocol warning; the error says enough.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(path, _unpickling_cause(e)) from e
    except EOFError as e:  # torch's own message for it is empty
        raise CheckpointError(path, "unreadable: the file ends early (empty or cut short)") from e
    except Exception as e:  # torch raises many types for damaged files; all mean "not loadable"
        raise CheckpointError(path, f"unreadable: {_first_line(e)}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"holds a {type(payload).__name__}, not a checkpoint dict")
    version = payload.get("format_version")
    if not _is_int(version) or version != FORMAT_VERSION:  # a tensor's != is not a bool
        raise CheckpointError(path, f"format version {_show(version)}, expected {FORMAT_VERSION}")
    return payload


def _unpickling_cause(e: pickle.UnpicklingError) -> str:
    # torch's message advises weights_only=False, i.e. running the file's code: never quote it.
    text = str(e)
    if "GLOBAL" in text:  # the safe unpickler met a class or function it will not import
        return REFUSED_CODE
    if text.startswith("Weights only load failed"):
        return "unreadable: not written by torch.save, or damaged"
    return f"unreadable: {_first_line(e)}"


def _parse_config(path: Path, payload: dict) -> EncoderConfig:
    raw = payload.get("encoder_config")
    if not isinstance(raw, dict):
        raise CheckpointError(path, f"encoder_config is a {type(raw).__name__}, not a dict")
    known = {f.name for f in fields(EncoderConfig)}
    try:
        config = EncoderConfig(**{k: v for k, v in raw.items() if k in known})
    except TypeError as e:
        raise CheckpointError(path, f"bad encoder config: {e}") from e
    problem = _config_problem(config)
    if problem:
        raise CheckpointError(path, f"bad encoder config: {problem}")
    return config


def _config_problem(config: EncoderConfig) -> str | None:
    """Why the config cannot describe a model worth building, or None."""
    if not isinstance(config.name, str) or config.name not in ENCODERS:
        return f"unknown encoder {_show(config.name)}; known: {', '.join(sorted(ENCODERS))}"
    if not _is_int(config.d) or not 0 < config.d <= MAX_D:
        return f"d = {_show(config.d)}, expected a whole number in 1…{MAX_D}"
    width = config.width
    if not _is_real(width) or not 0 < width <= MAX_WIDTH:
        return f"width = {_show(width)}, expected a number in (0, {MAX_WIDTH:g}]"
    if not isinstance(config.projection, str) or config.projection not in PROJECTIONS:
        known = ", ".join(sorted(PROJECTIONS))
        return f"unknown projection {_show(config.projection)}; known: {known}"
    return None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    """A finite int or float, not a bool (True would pass as 1)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return isinstance(value, int) or math.isfinite(value)  # isfinite overflows on huge ints


def _parse_state_dict(path: Path, payload: dict) -> dict[str, torch.Tensor]:
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise CheckpointError(path, f"state_dict is a {type(state_dict).__name__}, not a dict")
    for name, value in state_dict.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"state_dict entry {_show(name)} is not a named tensor")
    return state_dict


def _parse_dict(path: Path, payload: dict, key: str) -> dict:
    value = payload.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CheckpointError(path, f"{key} is a {type(value).__name__}, not a dict")
    return dict(value)


def _parse_evaluation(path: Path, payload: dict) -> dict:
    """The evaluation summary; its calibration is what engine.search.evidence_threshold reads."""
    evaluation = _parse_dict(path, payload, "evaluation")
    calibration = evaluation.get("calibration")
    if calibration is None:
        return evaluation
    if not isinstance(calibration, dict):
        raise CheckpointError(path, f"calibration is a {type(calibration).__name__}, not a dict")
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
        if not (_is_int(n) or (isinstance(n, str) and n.strip().isdecimal())) or int(n) <= 0:
            return f"segment count {_show(n)} is not a positive whole number"
        if not _is_real(value) or value <= 0:
            return f"threshold {_show(value)} for {_show(n)} segments is not finite and positive"
    return None


def _parse_rows(path: Path, payload: dict, key: str, d: int) -> np.ndarray | None:
    """Fingerprints float32 (rows, d) stored under key (background, reference), or None."""
    rows = payload.get(key)
    if rows is None:
        return None
    if not isinstance(rows, torch.Tensor) or rows.ndim != 2 or rows.shape[1] != d:
        raise CheckpointError(path, f"{key} fingerprints are not (rows, {d})")
    if not rows.is_floating_point() or not bool(torch.isfinite(rows).all()):
        raise CheckpointError(path, f"{key} fingerprints are not finite real numbers")
    return rows.float().numpy()


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
