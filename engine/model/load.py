"""Loading a checkpoint for inference: the one module that dispatches to the backends.

`load_checkpoint` takes a `.pt` (engine.model.torch_backend: the training format) or its ONNX
export (engine.model.onnx_backend); given a `.pt` it runs on ONNX Runtime through the export
beside it or one cached for it, made on first use where torch is installed, so the app and the
`nfp` command never import torch. torch is an optional extra (`nfp[train]`): its backend and the
export are imported only where a checkpoint runs on torch or an export has to be made.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import platformdirs

from engine.core.errors import CheckpointError
from engine.core.stamps import is_verified, remember_verified
from engine.model.checkpoint import Checkpoint, file_sha256
from engine.model.encoder_config import EncoderConfig
from engine.model.onnx_backend import load_onnx, onnx_encoder, runtime, verify_export
from engine.model.precision import Encoder
from engine.model.verified import stamp

log = logging.getLogger(__name__)

BACKEND_ENV = "NFP_BACKEND"  # auto (the default) | onnx | torch
BACKENDS = ("auto", "onnx", "torch")


def requested_backend(value: str | None = None) -> str:
    """The inference backend asked for: `value`, else $NFP_BACKEND, else auto."""
    value = (value or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if value not in BACKENDS:
        expected = ", ".join(BACKENDS)
        raise CheckpointError(Path(BACKEND_ENV), f"{value!r}: expected one of {expected}")
    return value


def load_checkpoint(path: str | Path, backend: str | None = None) -> Checkpoint:
    """A checkpoint ready for inference; CheckpointError names the file and cause.

    `backend` (else $NFP_BACKEND): "torch" reads the .pt with torch; "onnx" runs its export on
    ONNX Runtime; "auto" does that where ONNX Runtime is installed and torch otherwise.
    Every part of the file is checked before use, so a malformed one is refused with one reason
    instead of failing later, far from its cause.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    backend = requested_backend(backend)
    if path.suffix.lower() == ".onnx":
        if backend == "torch":
            raise CheckpointError(path, f"an ONNX export runs on ONNX Runtime ({BACKEND_ENV}=torch "
                                        "needs the .pt checkpoint)")  # fmt: skip
        return load_onnx(path)
    if pt_backend(backend) == "torch":
        if not _importable("torch"):
            why = f"{BACKEND_ENV}=torch" if backend == "torch" else "without ONNX Runtime, nfp"
            raise CheckpointError(path, f"{why} runs it on torch, which is not installed "
                                        "(pip install 'nfp[train]')")  # fmt: skip
        from engine.model.torch_backend import load_torch

        return load_torch(path)
    return _load_export(path, fall_back_to_torch=backend == "auto")


def pt_backend(backend: str | None = None) -> str:
    """What a .pt runs on here: "torch" when asked for or without ONNX Runtime, else "onnx"."""
    backend = requested_backend(backend)
    if backend == "torch" or (backend == "auto" and not onnxruntime_installed()):
        return "torch"
    return "onnx"


def export_cache_dir() -> Path:
    """Where the exports of checkpoints that have none beside them are kept."""
    return platformdirs.user_cache_path("nfp") / "onnx"


def onnx_exports(path: Path, sha256: str) -> list[Path]:
    """Where an export of the .pt `path` (file hash `sha256`) may be: beside it, then cached."""
    return [path.with_suffix(".onnx"), export_cache_dir() / f"{sha256[:32]}.onnx"]


def _load_export(path: Path, *, fall_back_to_torch: bool) -> Checkpoint:
    """The .pt's current export on ONNX Runtime, made and cached first if there is none (or
    only refused ones: an export is used only once verified against its .pt)."""
    sha256 = file_sha256(path)
    refused: list[str] = []
    current = current_export(path, sha256, refused)
    if current is not None:
        return current
    if not _importable("torch"):
        why = f"its ONNX export was refused ({refused[0]})" if refused else "has no ONNX export"
        raise CheckpointError(path, f"{why}, and torch is not installed to make one: run "
                                    f"`nfp export {path}` where it is")  # fmt: skip
    from engine.model.export import export_onnx

    target = onnx_exports(path, sha256)[1]
    try:
        export_onnx(path, target)
    except CheckpointError as e:
        if not fall_back_to_torch:
            raise
        from engine.model.torch_backend import load_torch

        checkpoint = load_torch(path)  # a .pt torch refuses is that error, without the warning
        log.warning("%s; running it on torch", e)
        return checkpoint
    return load_onnx(target, source=path)


def current_export(path: Path, sha256: str, refused: list[str] | None = None) -> Checkpoint | None:
    """The .pt's export made from this very file (file hash `sha256`) and verified against it
    (engine.model.onnx_backend.verify_export, once per pair of file contents: _verify_once),
    loaded for inference, or None. Why each export found was refused is logged and added to
    `refused`."""
    for export in onnx_exports(path, sha256):
        if not export.is_file():
            continue
        try:
            checkpoint = load_onnx(export, source=path)
            if checkpoint.sha256 != sha256:
                log.info("%s: exported from another version of %s; not used", export, path.name)
                continue
            _verify_once(checkpoint, path)
        except CheckpointError as e:
            log.warning("%s; not used", e)
            if refused is not None:
                refused.append(str(e))
            continue
        return checkpoint
    return None


def _verify_once(export: Checkpoint, source: Path) -> None:
    """verify_export, unless a stamp says that these very bytes of the export (the ones its
    session was made from) and of the .pt passed it on this ONNX Runtime version
    (engine.model.verified)."""
    record = stamp(export.export_sha256, export.sha256, runtime().__version__)
    if is_verified(record):
        return
    verify_export(export, source)
    remember_verified(record)


def read_config(path: str | Path) -> EncoderConfig:
    """A checkpoint's encoder config, read without building its network (for listing)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    if path.suffix.lower() == ".onnx":
        return load_onnx(path).config
    if onnxruntime_installed():
        current = current_export(path, file_sha256(path))
        if current is not None:
            return current.config
    if not _importable("torch"):
        raise CheckpointError(path, "has no ONNX export, and torch is not installed to read it")
    from engine.model.torch_backend import read_torch_config

    return read_torch_config(path)


def onnxruntime_installed() -> bool:
    """Whether ONNX Runtime imports (through engine.model.onnx_backend, which turns its telemetry
    off before it starts)."""
    try:
        runtime()
    except ImportError:
        return False
    return True


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def make_encoder(checkpoint: Checkpoint, requested: str) -> Encoder:
    """The checkpoint's encoder on its backend, at the precision this machine allows. On ONNX
    Runtime each call runs on one core; torch's threads are the process's."""
    if checkpoint.backend == "onnx":
        return onnx_encoder(checkpoint, requested)
    from engine.model.torch_backend import TorchEncoder

    return TorchEncoder(checkpoint.model, requested)
