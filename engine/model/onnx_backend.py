"""Inference on ONNX Runtime: a checkpoint's export, with everything the engine reads from the
checkpoint in the model's metadata, so no torch is needed to index or identify.

The export (engine.model.export) stores the .pt's encoder config, training facts, evaluation and
calibration, reference fingerprints, its weights' hash (which libraries are bound to) and the
.pt's file hash (so an export made before the .pt was re-saved is not used for it). Its 16,384
background rows live beside it as NAME.background.npy, named in the metadata by their SHA-256
(so the export's own bytes still identify everything it runs with): read from a .npy they take
a few ms, where decoding them from the metadata (base64 in JSON, and ONNX Runtime parsing and
copying 5.6 MB of text) took 0.035 s of CPU of each `nfp identify` on a 2-core AMD EPYC.
Exports made before keep them in the metadata, and still load.

An export may have an int8 twin beside it (NAME.int8.onnx, engine.model.quantize), with the same
metadata and the same background file; it runs only where the probe passes on this machine, or
where it is asked for.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engine.core.errors import CheckpointError
from engine.core.features import N_FRAMES, N_MELS
from engine.core.stamps import Stamp, is_verified, remember_verified
from engine.model.checkpoint import (
    FORMAT_VERSION,
    Checkpoint,
    checkpoint_from_payload,
    first_line,
    parse_config,
)
from engine.model.precision import PRECISION_ENV, Precision
from engine.model.probe import MIN_COSINE, min_cosine, probe_mel, same_neighbours
from engine.model.pt_reader import read_pt_payload, weights_digest
from engine.model.verified import reference_stamp

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

INPUT = "mel"  # float32 (n, 1, N_MELS, N_FRAMES)
OUTPUT = "fingerprints"  # float32 (n, d)
PREFIX = "nfp."  # the metadata keys the engine owns
JSON_KEYS = ("encoder_config", "training", "evaluation")
ARRAY_KEYS = ("background", "reference")  # the background's rows are in a file beside the export
TEXT_KEYS = ("format_version", "source_sha256", "source_name", "weights_sha256")
INT8_SUFFIX = ".int8.onnx"  # an export's int8 twin, beside it
BACKGROUND_SUFFIX = ".background.npy"  # an export's background rows, beside it
TELEMETRY_OFF_ENV = "ORT_DISABLE_TELEMETRY"  # read once, as the runtime starts
MIN_EXPORT_COSINE = 0.999  # ONNX Runtime against torch's float32 reference, on the probe
# The engine's code between the probe signal and its fingerprints on ONNX Runtime: a stamp of the
# reference check names these modules' bytes, so a changed front end or session is checked again.
NUMERIC_PATH = ("engine.core.audio", "engine.core.features", "engine.model.probe",
                "engine.model.onnx_backend", "engine.model.fingerprint")  # fmt: skip


def metadata(payload: dict) -> tuple[dict[str, str], bytes | None]:
    """The export's metadata (str → str) of a checkpoint payload, and the .npy file of its
    background rows to keep beside it (None without them): plain data as JSON, the reference
    rows as dtype, shape and base64 bytes, the background by its file's SHA-256 (the shipped
    d = 128 export is 4 MB, its 16,384 float16 background rows 4 MB more)."""
    out = {PREFIX + key: str(payload[key]) for key in TEXT_KEYS}
    out |= {PREFIX + key: json.dumps(payload.get(key) or {}) for key in JSON_KEYS}
    reference = payload.get("reference")
    if reference is not None:
        rows = np.ascontiguousarray(reference)
        encoded = {"dtype": rows.dtype.str, "shape": list(rows.shape),
                   "data": base64.b64encode(rows.tobytes()).decode()}  # fmt: skip
        out[PREFIX + "reference"] = json.dumps(encoded)
    if payload.get("background") is None:
        return out, None
    stored = io.BytesIO()
    np.save(stored, np.ascontiguousarray(payload["background"]), allow_pickle=False)
    background = stored.getvalue()
    out[PREFIX + "background"] = json.dumps({"sha256": hashlib.sha256(background).hexdigest()})
    return out, background


def background_path(export: Path) -> Path:
    """Where an export's background rows are kept: NAME.background.npy beside NAME.onnx (and
    its int8 twin NAME.int8.onnx)."""
    stem = export.name.removesuffix(INT8_SUFFIX).removesuffix(".onnx")
    return export.with_name(stem + BACKGROUND_SUFFIX)


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
    checkpoint's). The session is made from the bytes that were hashed (`export_sha256`), so a
    stamp names exactly what runs. CheckpointError names the file and the cause."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    content = read_model(path)
    try:
        session = open_session(content)
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
        export_sha256=hashlib.sha256(content).hexdigest(),
    )


def open_session(model: Path | bytes) -> ort.InferenceSession:
    """An ONNX Runtime session of the model (a file, or its bytes) with the engine's options."""
    model = model if isinstance(model, bytes) else str(model)
    return runtime().InferenceSession(model, session_options(),
                                      providers=["CPUExecutionProvider"])  # fmt: skip


def read_model(path: Path) -> bytes:
    """An ONNX file's bytes; CheckpointError names the file where it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise CheckpointError(path, f"unreadable: {e.strerror or e}") from e


def onnx_encoder(checkpoint: Checkpoint, requested: str) -> OnnxEncoder:
    """The checkpoint's export (and int8 twin) on ONNX Runtime, each call on one core (the
    checkpoint's session)."""
    int8 = load_int8(checkpoint) if requested in ("auto", "int8") else None
    return OnnxEncoder(checkpoint.model, requested, int8=int8, reference=checkpoint.reference,
                       sha256=checkpoint.export_sha256)  # fmt: skip


def verify_export(export: Checkpoint, source: Path) -> None:
    """Refuse (CheckpointError naming the export) an export that is not its .pt's: metadata
    that differs from the .pt's (config, weights' hash, training, evaluation and calibration,
    background, reference), or a network whose fingerprints of the probe are not the .pt's
    reference. Reads the .pt without torch (engine.model.pt_reader)."""
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


@dataclass(frozen=True)
class Int8Twin:
    """An export's int8 twin, opened."""

    session: ort.InferenceSession
    sha256: str  # of the bytes the session was made from: what a stamp of its probe names


class OnnxEncoder:
    """An export's inference: log-mel float32 (n, 1, N_MELS, N_FRAMES) → fingerprints float32
    (n, d). ONNX Runtime's run() is thread-safe; the only state is the one-way switch from int8
    back to float32. Float32 is the torch float32 model's output on the probe signal to cosine
    0.9999999 (the shipped d = 128; tests/test_onnx.py holds it to 0.99999 on real music); int8
    (`int8`, the export's twin) runs where chosen by choose_onnx_precision."""

    def __init__(
        self,
        session: ort.InferenceSession,
        requested: str,
        *,
        int8: Int8Twin | None = None,
        reference: np.ndarray | None = None,
        sha256: str | None = None,
    ) -> None:
        """`reference`: the checkpoint's float32 fingerprints (15, d) of the probe, if any;
        `sha256`: of the export's bytes the session was made from, if known."""
        self.session = session
        self.int8 = int8
        self.sha256 = sha256
        self.d = session.get_outputs()[0].shape[1]
        self.precision = choose_onnx_precision(self, requested, reference)

    @property
    def reference_stamp(self) -> Stamp | None:
        """The stamp of a reference check passed by the model that runs now (None: none kept)."""
        if self.precision.chosen == "int8" and self.int8 is not None:
            return reference_check_stamp(self.int8.sha256, "int8")
        return reference_check_stamp(self.sha256, "float32")

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        if not len(mel):
            return np.empty((0, self.d), np.float32)
        mel = np.ascontiguousarray(mel, np.float32)
        if self.precision.chosen != "int8":
            return _run(self.session, mel)
        fp = _run(self.int8.session, mel)
        if np.isfinite(fp).all():
            return fp
        log.warning("int8 fingerprints were not finite; switching to float32")
        self.precision = Precision(self.precision.requested, "float32",
                                   "int8 gave non-finite fingerprints at run time")  # fmt: skip
        return _run(self.session, mel)

    def probe(self, path: str) -> np.ndarray:
        """Fingerprints (15, d) of the probe signal on `path` (float32 or int8), no fallback."""
        return _run(self.session if path == "float32" else self.int8.session, probe_mel())


def _run(session: ort.InferenceSession, mel: np.ndarray) -> np.ndarray:
    return session.run([OUTPUT], {INPUT: mel})[0]


def reference_check_stamp(model_sha256: str | None, precision: str) -> Stamp | None:
    """The stamp that remembers that the model with these bytes' SHA-256 agreed with its
    checkpoint's reference at `precision` on this machine (engine.model.verified.reference_stamp;
    for int8, the whole probe of _probe_int8); None where none is kept: the bytes not hashed,
    the machine or the code not told apart."""
    if model_sha256 is None:
        return None
    return reference_stamp(model_sha256, runtime().__version__, precision, NUMERIC_PATH)


# One probe per loaded int8 model, not one per Fingerprinter made from it.
_DECISIONS: weakref.WeakKeyDictionary[ort.InferenceSession, Precision] = weakref.WeakKeyDictionary()


def choose_onnx_precision(
    encoder: OnnxEncoder, requested: str, reference: np.ndarray | None
) -> Precision:
    """float32 unless int8 is requested, or asked for by auto and proven by the probe: every
    row finite, within cosine MIN_COSINE of float32 and nearest to its own float32 row. The
    checkpoint's reference is float32 fingerprints of that very probe, so where there is one
    it stands in for running float32 here."""
    if requested in ("float32", "bfloat16"):
        reason = f"float32 requested ({PRECISION_ENV})" if requested == "float32" else (
            f"bfloat16 is a torch path: {PRECISION_ENV} with NFP_BACKEND=torch")  # fmt: skip
        return Precision(requested, "float32", reason)
    if encoder.int8 is None:
        return Precision(requested, "float32", "the export has no int8 twin")
    if requested == "int8":
        return Precision(requested, "int8", f"int8 requested ({PRECISION_ENV})")
    if encoder.int8.session not in _DECISIONS:
        _DECISIONS[encoder.int8.session] = _decide_int8(encoder, reference)
    return _DECISIONS[encoder.int8.session]


def _decide_int8(encoder: OnnxEncoder, reference: np.ndarray | None) -> Precision:
    """The probe's verdict on the twin, remembered per machine when it passed against the
    checkpoint's reference: the probe cost `nfp identify` 0.06 s of CPU on each run (the twin's
    log-mels and 15 segments through it)."""
    record = reference_check_stamp(encoder.int8.sha256, "int8") if reference is not None else None
    if record is not None and is_verified(record):
        return Precision("auto", "int8", "int8 passed the probe on this machine before")
    target = reference if reference is not None else encoder.probe("float32")
    decision = _probe_int8(encoder.probe("int8"), target)
    if decision.chosen == "int8" and record is not None:
        remember_verified(record)
    return decision


def _probe_int8(fingerprints: np.ndarray, float32: np.ndarray) -> Precision:
    cosine = min_cosine(fingerprints, float32)
    if cosine >= MIN_COSINE and same_neighbours(fingerprints, float32):
        return Precision("auto", "int8", f"int8 passed the probe (cosine {cosine:.4f})")
    if np.isnan(cosine):
        found = "non-finite output"
    elif cosine < MIN_COSINE:
        found = f"cosine {cosine:.3f} to float32"
    else:
        found = "nearest neighbours differ from float32's"
    return Precision("auto", "float32", f"int8 failed the probe ({found})")


def int8_path(export: Path) -> Path:
    """Where an export's int8 twin is kept (engine.model.quantize makes it)."""
    return export.with_name(export.name.removesuffix(".onnx") + INT8_SUFFIX)


def has_int8_twin(checkpoint: Path) -> bool:
    """Whether the checkpoint (a .pt or its export) has an int8 twin beside its export."""
    return int8_path(Path(checkpoint).with_suffix(".onnx")).is_file()


# The int8 twin of each checkpoint's float32 session, opened once.
_TWINS: weakref.WeakKeyDictionary[ort.InferenceSession, Int8Twin | None] = (
    weakref.WeakKeyDictionary()
)


def load_int8(checkpoint: Checkpoint) -> Int8Twin | None:
    """The int8 twin of the checkpoint's export, if it has one made from these very weights;
    None otherwise (a damaged or stale twin is logged and not used)."""
    if checkpoint.model not in _TWINS:
        _TWINS[checkpoint.model] = _open_twin(checkpoint)
    return _TWINS[checkpoint.model]


def _open_twin(checkpoint: Checkpoint) -> Int8Twin | None:
    path = int8_path(checkpoint.onnx_path) if checkpoint.onnx_path else None
    if path is None or not path.is_file():
        return None
    try:
        content = read_model(path)
        session = open_session(content)
        meta = session.get_modelmeta().custom_metadata_map
        _check_signature(path, session, checkpoint.d)
    except Exception as e:  # ONNX Runtime raises its own types for damaged files
        log.warning("%s: unreadable int8 model, not used (%s)", path, first_line(e))
        return None
    if meta.get(PREFIX + "weights_sha256") != checkpoint.weights_sha256:
        log.warning("%s: made from other weights than %s; not used", path, checkpoint.path.name)
        return None
    return Int8Twin(session, hashlib.sha256(content).hexdigest())


def session_options(threads: int = 1) -> ort.SessionOptions:
    """One core a call (engine.model.fingerprint.Fingerprinter runs calls side by side; `threads`
    sets more, for benchmarks), and no spinning after it: a spinning pool would take the cores
    from faiss's search, which runs right after each encoder call."""
    options = runtime().SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3  # errors only: its warnings are about graph optimisation
    return options


def _parse_metadata(path: Path, meta: dict[str, str]) -> dict:
    """The checkpoint payload the export at `path` carries, with the background rows beside
    it; refused unless it is whole."""
    missing = [k for k in TEXT_KEYS + JSON_KEYS if PREFIX + k not in meta]
    if missing:
        raise CheckpointError(path, f"not an nfp export: metadata lacks {', '.join(missing)}")
    if meta[PREFIX + "format_version"] != str(FORMAT_VERSION):
        found = meta[PREFIX + "format_version"][:20]
        raise CheckpointError(path, f"format version {found!r}, expected {FORMAT_VERSION}")
    payload: dict = {k: meta[PREFIX + k] for k in TEXT_KEYS}
    try:
        payload |= {k: json.loads(meta[PREFIX + k]) for k in JSON_KEYS}
        payload |= {k: _decode_rows(path, meta.get(PREFIX + k)) for k in ARRAY_KEYS}
    except (ValueError, TypeError, KeyError) as e:
        raise CheckpointError(path, f"damaged metadata: {first_line(e)}") from e
    return payload


def _decode_rows(path: Path, text: str | None) -> np.ndarray | None:
    """Rows kept in the metadata (dtype, shape, base64 bytes), or in the file beside the export
    that the metadata names by its SHA-256 (engine.model.onnx_backend.background_path)."""
    if text is None:
        return None
    encoded = json.loads(text)
    if "data" not in encoded:
        return _read_background(path, encoded["sha256"])
    rows = np.frombuffer(base64.b64decode(encoded["data"]), np.dtype(encoded["dtype"]))
    return rows.reshape(encoded["shape"])


def _read_background(export: Path, sha256: str) -> np.ndarray:
    """The background rows beside `export`, refused (CheckpointError naming the export) unless
    they are the very file its metadata names."""
    path = background_path(export)
    try:
        content = path.read_bytes()
    except OSError as e:
        why = "missing" if isinstance(e, FileNotFoundError) else f"unreadable ({e.strerror or e})"
        raise CheckpointError(export, f"its background rows {path.name} are {why}: keep the "
                                      "two files together, or export again") from e  # fmt: skip
    if hashlib.sha256(content).hexdigest() != sha256:
        raise CheckpointError(export, f"its background rows {path.name} are not the ones it was "
                                      "exported with: export again")  # fmt: skip
    try:
        return np.load(io.BytesIO(content), allow_pickle=False)
    except ValueError as e:  # a file with the right hash that numpy cannot read: a foreign one
        raise CheckpointError(export, f"{path.name}: not background rows ({first_line(e)})") from e


def _check_signature(path: Path, session: ort.InferenceSession, d: int) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    shapes = (inputs[0].shape[1:], outputs[0].shape[1:])
    if [i.name for i in inputs] != [INPUT] or OUTPUT not in [o.name for o in outputs]:
        raise CheckpointError(path, f"the model does not map {INPUT!r} to {OUTPUT!r}")
    if shapes != ([1, N_MELS, N_FRAMES], [d]):
        raise CheckpointError(path, f"the model maps {shapes[0]} to {shapes[1]}, not "
                                    f"[1, {N_MELS}, {N_FRAMES}] to [{d}]")  # fmt: skip
