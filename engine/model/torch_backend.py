"""The torch side of checkpoints: reading the `.pt` format training writes, and inference on torch.

A `.pt` is loaded with `torch.load(weights_only=True)`, so a file crafted to run code when
unpickled is refused instead of executed. Inference runs here only where ONNX Runtime or an
export is missing, or $NFP_BACKEND=torch asks for it (engine.model.load).

The encoder runs in float32 unless a faster numeric path is proven right *on this machine*:
`choose_precision` encodes a fixed probe batch both ways and keeps bfloat16 only if every row is
finite and within cosine MIN_COSINE of float32 (docs/architecture.md, Numeric paths). CPU flags
cannot decide it: on an Intel Xeon with AMX, oneDNN's bfloat16 kernels returned fingerprints at
cosine 0.2 to float32's (and, in some runs, NaN) while AVX512-BF16 machines without AMX were fine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import warnings
import weakref
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.core.errors import CheckpointError
from engine.core.threads import usable_cores
from engine.model.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    checkpoint_from_payload,
    file_sha256,
    first_line,
    is_int,
    parse_config,
    show,
)
from engine.model.encoder_config import EncoderConfig
from engine.model.encoders import ENCODERS, build_encoder
from engine.model.encoders.heads import PROJECTIONS
from engine.model.precision import PRECISION_ENV, Precision
from engine.model.probe import MIN_COSINE, min_cosine, probe_mel

log = logging.getLogger(__name__)

REFUSED_CODE = (
    "refused: it contains code or objects other than tensors and plain data "
    "(a checkpoint must be loadable with weights_only)"
)


def load_torch(path: str | Path) -> Checkpoint:
    """Rebuild the model a `.pt` describes, in eval mode; CheckpointError names the file and
    cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    payload = _read_payload(path)
    config = parse_config(path, payload)
    problem = _registry_problem(config)
    if problem:
        raise CheckpointError(path, f"bad encoder config: {problem}")
    state_dict = _parse_state_dict(path, payload)
    try:
        model = build_encoder(config)
        model.load_state_dict(state_dict)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(path, f"weights do not fit {config.name}: {first_line(e)}") from e
    rows = {key: _as_numpy(payload.get(key)) for key in ("background", "reference")}
    return checkpoint_from_payload(
        path,
        {**payload, **rows},
        config,
        sha256=file_sha256(path),
        weights_sha256=weights_sha256(config, model),
        backend="torch",
        model=model.eval(),
    )


def read_torch_config(path: Path) -> EncoderConfig:
    """A `.pt`'s encoder config; mmap: only the small config is read, not the weights."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:  # as in _read_payload; its messages are for loading, not listing
        raise CheckpointError(path, f"cannot read its configuration: {first_line(e)}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"holds a {type(payload).__name__}, not a checkpoint dict")
    return parse_config(path, payload)


def weights_sha256(config: EncoderConfig, model: nn.Module) -> str:
    """What decides the fingerprints: the encoder config and weights, and nothing stored
    beside them, so re-evaluating a checkpoint leaves the libraries it built valid."""
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def reference_fingerprints(model: nn.Module) -> np.ndarray:
    """The model's float32 fingerprints (15, d) of the probe, in the plain eager path, on the
    model's device; a model in training is put back in training mode."""
    training = model.training
    device = next(model.parameters(), torch.empty(0)).device  # a model may have no weights
    try:
        with torch.inference_mode():
            mel = torch.from_numpy(probe_mel()).to(device)
            return model.eval()(mel).float().cpu().numpy()
    finally:
        model.train(training)


class TorchEncoder:
    """A model's inference on torch: log-mel float32 (n, 1, N_MELS, N_FRAMES) → fingerprints
    float32 (n, d). Thread-safe (no state between calls but the one-way switch from a fast path
    back to float32).

    Convolutions run channels-last (oneDNN's preferred layout: same numbers, 1.3× faster here).
    """

    def __init__(self, model: nn.Module, requested: str) -> None:
        torch.set_num_threads(usable_cores())  # engine.core.threads: the encoder gets every core
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.precision = choose_precision(self, requested)
        self.reference_stamp = None  # torch's numeric path is not remembered: checked each load

    @property
    def bfloat16(self) -> bool:
        return self.precision.chosen == "bfloat16"

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.encode(torch.from_numpy(np.ascontiguousarray(mel))).numpy()

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Under torch.inference_mode(). A fast-path batch that is not finite is recomputed in
        float32 and the fast path is switched off for good (its NaN came and went between runs)."""
        mel = mel.contiguous(memory_format=torch.channels_last)
        if not self.bfloat16:
            return self.model(mel)
        fp = self.encode_bfloat16(mel)
        if bool(torch.isfinite(fp).all()):
            return fp
        log.warning("bfloat16 fingerprints were not finite; switching to float32")
        self.precision = Precision(self.precision.requested, "float32",
                                   "bfloat16 gave non-finite fingerprints at run time")  # fmt: skip
        _DECISIONS[self.model] = self.precision
        return self.model(mel)

    def encode_bfloat16(self, mel: torch.Tensor) -> torch.Tensor:
        """The fast path: bfloat16 autocast, unit length restored in float32."""
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fp = self.model(mel)
        return torch.nn.functional.normalize(fp.float(), dim=1)

    def probe(self, path: str) -> np.ndarray:
        """Fingerprints (15, d) of the probe signal on `path` (float32 or bfloat16), without
        any fallback."""
        mel = torch.from_numpy(probe_mel()).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return (self.model(mel) if path == "float32" else self.encode_bfloat16(mel)).numpy()


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16). Elsewhere bfloat16 is
    emulated and slower than float32, so it is not worth probing; it is never proof of
    correctness (see the module docstring)."""
    supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(supported is not None and supported())


# One decision per loaded model: the probe costs one small batch twice, not once per caller.
_DECISIONS: weakref.WeakKeyDictionary[nn.Module, Precision] = weakref.WeakKeyDictionary()


def choose_precision(encoder: TorchEncoder, requested: str) -> Precision:
    """float32 unless bfloat16 is requested, or asked for by auto and proven by the probe."""
    if requested == "float32":
        return Precision(requested, "float32", f"float32 requested ({PRECISION_ENV})")
    if requested == "bfloat16":
        return Precision(requested, "bfloat16", f"bfloat16 requested ({PRECISION_ENV})")
    if requested == "int8":
        return Precision(requested, "float32", "int8 is an ONNX Runtime path (NFP_BACKEND=onnx)")
    cached = _DECISIONS.get(encoder.model)
    if cached is not None:
        return cached
    if not native_bfloat16():
        decision = Precision(requested, "float32", "this CPU has no native bfloat16")
    else:
        decision = _probe_bfloat16(encoder, requested)
    _DECISIONS[encoder.model] = decision
    return decision


def _probe_bfloat16(encoder: TorchEncoder, requested: str) -> Precision:
    cosine = min_cosine(encoder.probe("float32"), encoder.probe("bfloat16"))
    if cosine >= MIN_COSINE:
        return Precision(requested, "bfloat16", f"bfloat16 passed the probe (cosine {cosine:.4f})")
    found = "non-finite output" if np.isnan(cosine) else f"cosine {cosine:.3f} to float32"
    return Precision(requested, "float32", f"bfloat16 failed the probe ({found})")


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
        raise CheckpointError(path, f"unreadable: {first_line(e)}") from e
    if not isinstance(payload, dict):
        raise CheckpointError(path, f"holds a {type(payload).__name__}, not a checkpoint dict")
    version = payload.get("format_version")
    if not is_int(version) or version != FORMAT_VERSION:  # a tensor's != is not a bool
        raise CheckpointError(path, f"format version {show(version)}, expected {FORMAT_VERSION}")
    return payload


def _unpickling_cause(e: pickle.UnpicklingError) -> str:
    # torch's message advises weights_only=False, i.e. running the file's code: never quote it.
    text = str(e)
    if "GLOBAL" in text:  # the safe unpickler met a class or function it will not import
        return REFUSED_CODE
    if text.startswith("Weights only load failed"):
        return "unreadable: not written by torch.save, or damaged"
    return f"unreadable: {first_line(e)}"


def _registry_problem(config: EncoderConfig) -> str | None:
    if config.name not in ENCODERS:
        return f"unknown encoder {show(config.name)}; known: {', '.join(sorted(ENCODERS))}"
    if config.projection not in PROJECTIONS:
        known = ", ".join(sorted(PROJECTIONS))
        return f"unknown projection {show(config.projection)}; known: {known}"
    return None


def _parse_state_dict(path: Path, payload: dict) -> dict[str, torch.Tensor]:
    state_dict = payload.get("state_dict")
    if not isinstance(state_dict, dict):
        raise CheckpointError(path, f"state_dict is a {type(state_dict).__name__}, not a dict")
    for name, value in state_dict.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(path, f"state_dict entry {show(name)} is not a named tensor")
    return state_dict


def _as_numpy(rows: object) -> object:
    """A stored tensor of fingerprint rows as numpy (float32 if floating); anything else as is,
    for engine.model.checkpoint to refuse."""
    if not isinstance(rows, torch.Tensor):
        return rows
    return (rows.float() if rows.is_floating_point() else rows).numpy()
