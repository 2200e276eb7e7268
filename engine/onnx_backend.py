"""Inference on ONNX Runtime: a checkpoint's export, with everything the engine reads from the
checkpoint in the model's metadata, so no torch is needed to index or identify.

The export (engine.export) stores the .pt's encoder config, training facts, evaluation and
calibration, background and reference fingerprints, its weights' hash (which libraries are bound
to) and the .pt's file hash (so an export made before the .pt was re-saved is not used for it).
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    checkpoint_from_payload,
    first_line,
    parse_config,
)
from engine.errors import CheckpointError
from engine.features import N_FRAMES, N_MELS
from engine.fingerprint import PRECISION_ENV, Precision
from engine.probe import min_cosine, probe_mel
from engine.pt_reader import read_pt_payload, weights_digest
from engine.threads import usable_cores

if TYPE_CHECKING:
    import onnxruntime as ort

INPUT = "mel"  # float32 (n, 1, N_MELS, N_FRAMES)
OUTPUT = "fingerprints"  # float32 (n, d)
PREFIX = "nfp."  # the metadata keys the engine owns
JSON_KEYS = ("encoder_config", "training", "evaluation")
ARRAY_KEYS = ("background", "reference")
TEXT_KEYS = ("format_version", "source_sha256", "source_name", "weights_sha256")
TELEMETRY_OFF_ENV = "ORT_DISABLE_TELEMETRY"  # read once, as the runtime starts
MIN_EXPORT_COSINE = 0.999  # ONNX Runtime against torch's float32 reference, on the probe


def metadata(payload: dict) -> dict[str, str]:
    """The export's metadata (str → str) of a checkpoint payload: plain data as JSON, arrays
    as dtype, shape and base64 bytes (the shipped d = 128 export is 9.6 MB, 3.7 MB of it the
    network: the 16,384 float16 background rows are most of the rest)."""
    out = {PREFIX + key: str(payload[key]) for key in TEXT_KEYS}
    out |= {PREFIX + key: json.dumps(payload.get(key) or {}) for key in JSON_KEYS}
    for key in ARRAY_KEYS:
        rows = payload.get(key)
        if rows is not None:
            rows = np.ascontiguousarray(rows)
            encoded = {"dtype": rows.dtype.str, "shape": list(rows.shape),
                       "data": base64.b64encode(rows.tobytes()).decode()}  # fmt: skip
            out[PREFIX + key] = json.dumps(encoded)
    return out


def runtime():
    """ONNX Runtime, started with its telemetry off: by default it writes a device id and an
    event cache into the home folder (and warns in colour where it cannot), and nfp promises to
    run offline and record nothing about the machine. The switch is an environment variable
    the runtime reads when it is first imported, so every import goes through here."""
    os.environ[TELEMETRY_OFF_ENV] = "1"
    import onnxruntime

    return onnxruntime


def load_onnx(path: str | Path, source: Path | None = None) -> Checkpoint:
    """An export ready for inference; `source` is the .pt it stands for (its path becomes the
    checkpoint's). CheckpointError names the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    try:
        session = runtime().InferenceSession(str(path), session_options(),
                                       providers=["CPUExecutionProvider"])  # fmt: skip
    except Exception as e:  # ONNX Runtime raises its own types for damaged or foreign files
        raise CheckpointError(path, f"unreadable ONNX model: {first_line(e)}") from e
    payload = _parse_metadata(path, session.get_modelmeta().custom_metadata_map)
    config = parse_config(path, payload)
    _check_signature(path, session, config.d)
    return checkpoint_from_payload(
        source or path,
        payload,
        config,
        sha256=payload["source_sha256"],
        weights_sha256=payload["weights_sha256"],
        backend="onnx",
        model=session,
        onnx_path=path,
    )


def verify_export(export: Checkpoint, source: Path) -> None:
    """Refuse (CheckpointError naming the export) an export that is not its .pt's: metadata
    that differs from the .pt's (config, weights' hash, training, evaluation and calibration,
    background, reference), or a network whose fingerprints of the probe are not the .pt's
    reference. Reads the .pt without torch (engine.pt_reader)."""
    payload = read_pt_payload(source)
    config = parse_config(source, payload)
    stored = checkpoint_from_payload(source, payload, config, sha256="", weights_sha256="",
                                     backend="", model=None)  # fmt: skip
    differs = _differing_metadata(export, stored, weights_digest(config, payload["state_dict"]))
    if differs:
        raise CheckpointError(export.onnx_path, f"its {differs} differ from {source.name}'s: "
                              "edited or made from another checkpoint")  # fmt: skip
    if stored.reference is None:
        return  # a .pt older than reference fingerprints: its metadata is all there is to check
    cosine = min_cosine(OnnxEncoder(export.model, "float32")(probe_mel()), stored.reference)
    if not cosine >= MIN_EXPORT_COSINE:
        cause = f"cosine {cosine:.4f} < {MIN_EXPORT_COSINE} on the probe"
        raise CheckpointError(
            export.onnx_path, f"its network disagrees with {source.name} ({cause})"
        )


def _differing_metadata(export: Checkpoint, stored: Checkpoint, weights_sha256: str) -> str:
    """The names of the export's metadata that are not the .pt's, joined, or ''."""
    same = {
        "encoder config": export.config.to_dict() == stored.config.to_dict(),
        "weights' hash": export.weights_sha256 == weights_sha256,
        "training facts": _canonical(export.training) == _canonical(stored.training),
        "evaluation and calibration": _canonical(export.evaluation)
        == _canonical(stored.evaluation),
        "background": _same_rows(export.background, stored.background, np.float16),
        "reference": _same_rows(export.reference, stored.reference, np.float32),
    }
    return ", ".join(name for name, ok in same.items() if not ok)


def _canonical(data: dict) -> str:
    """Plain data as the export stores it (a JSON round trip), comparable as text (NaN too)."""
    try:
        return json.dumps(json.loads(json.dumps(data or {})), sort_keys=True)
    except (TypeError, ValueError):
        return repr(data)


def _same_rows(exported: np.ndarray | None, stored: np.ndarray | None, kept_as: type) -> bool:
    """Whether the export's rows are the .pt's as the export keeps them (background: float16)."""
    if exported is None or stored is None:
        return exported is None and stored is None
    return np.array_equal(exported, np.asarray(stored, kept_as).astype(np.float32))


class OnnxEncoder:
    """An export's inference: log-mel float32 (n, 1, N_MELS, N_FRAMES) → fingerprints float32
    (n, d). ONNX Runtime's run() is thread-safe. Float32 only: measured here, its output is
    the torch float32 model's on the probe signal to cosine 0.99999994 (the shipped d = 128;
    tests/test_onnx.py holds it to 0.999 on real music)."""

    def __init__(self, session: ort.InferenceSession, requested: str) -> None:
        self.session = session
        self.d = session.get_outputs()[0].shape[1]
        reason = "ONNX Runtime runs float32"
        if requested == "bfloat16":
            reason += f" (bfloat16 is a torch path: {PRECISION_ENV} with NFP_BACKEND=torch)"
        self.precision = Precision(requested, "float32", reason)

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        if not len(mel):
            return np.empty((0, self.d), np.float32)
        return self.session.run([OUTPUT], {INPUT: np.ascontiguousarray(mel, np.float32)})[0]


def session_options(threads: int = 0) -> ort.SessionOptions:
    """Every core for one call (engine.threads; `threads` > 0 sets the count, for benchmarks),
    and no spinning after it: a spinning pool would take the cores from faiss's search, which
    runs right after each encoder call."""
    options = runtime().SessionOptions()
    options.intra_op_num_threads = threads or usable_cores()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are about graph optimisation
    return options


def _parse_metadata(path: Path, meta: dict[str, str]) -> dict:
    """The checkpoint payload the export carries; refused unless it is whole."""
    missing = [k for k in TEXT_KEYS + JSON_KEYS if PREFIX + k not in meta]
    if missing:
        raise CheckpointError(path, f"not an nfp export: metadata lacks {', '.join(missing)}")
    if meta[PREFIX + "format_version"] != str(FORMAT_VERSION):
        found = meta[PREFIX + "format_version"][:20]
        raise CheckpointError(path, f"format version {found!r}, expected {FORMAT_VERSION}")
    payload: dict = {k: meta[PREFIX + k] for k in TEXT_KEYS}
    try:
        payload |= {k: json.loads(meta[PREFIX + k]) for k in JSON_KEYS}
        payload |= {k: _decode_rows(meta.get(PREFIX + k)) for k in ARRAY_KEYS}
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(path, f"damaged metadata: {first_line(e)}") from e
    return payload


def _decode_rows(text: str | None) -> np.ndarray | None:
    if text is None:
        return None
    encoded = json.loads(text)
    rows = np.frombuffer(base64.b64decode(encoded["data"]), np.dtype(encoded["dtype"]))
    return rows.reshape(encoded["shape"])


def _check_signature(path: Path, session: ort.InferenceSession, d: int) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shapes = (inputs[0].shape[1:], outputs[0].shape[1:])
    if [i.name for i in inputs] != [INPUT] or OUTPUT not in [o.name for o in outputs]:
        raise CheckpointError(path, f"the model does not map {INPUT!r} to {OUTPUT!r}")
    if shapes != ([1, N_MELS, N_FRAMES], [d]):
        raise CheckpointError(path, f"the model maps {shapes[0]} to {shapes[1]}, not "
                                    f"[1, {N_MELS}, {N_FRAMES}] to [{d}]")  # fmt: skip
