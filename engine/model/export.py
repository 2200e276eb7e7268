"""What torch writes: the `.pt` checkpoint training saves (`save_checkpoint`), and its ONNX export
that the engine runs on ONNX Runtime (`export_onnx`, `nfp export`).

Needs torch and onnx (the `train` extra). The export is checked before it is kept: ONNX
Runtime's fingerprints of the probe signal must agree with the checkpoint's float32 reference.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from engine.core.errors import CheckpointError
from engine.model.checkpoint import FORMAT_VERSION, first_line
from engine.model.encoder_config import EncoderConfig
from engine.model.onnx_backend import (
    INPUT,
    MIN_EXPORT_COSINE,
    OUTPUT,
    OnnxEncoder,
    background_path,
    load_onnx,
    metadata,
)
from engine.model.probe import min_cosine, probe_mel
from engine.model.torch_backend import load_torch, reference_fingerprints

OPSET = 18  # fixed, so an export made today loads in any ONNX Runtime since 1.14


def export_onnx(checkpoint_path: str | Path, out: str | Path | None = None) -> Path:
    """Export the `.pt` at checkpoint_path to `out` (default: beside it, as .onnx), atomically;
    returns `out`. CheckpointError if the network cannot be exported or its export disagrees."""
    source = Path(checkpoint_path)
    out = Path(out) if out is not None else source.with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":  # `--out good.pt` would overwrite a checkpoint
        raise CheckpointError(out, "an export is written to an .onnx file, never over another")
    checkpoint = load_torch(source)
    model = _onnx_model(source, checkpoint.model)
    payload = {
        "format_version": FORMAT_VERSION,
        "source_sha256": checkpoint.sha256,
        "source_name": source.name,
        "weights_sha256": checkpoint.weights_sha256,
        "encoder_config": checkpoint.config.to_dict(),
        "training": checkpoint.training,
        "evaluation": checkpoint.evaluation,
        "background": _float16(checkpoint.background),
        "reference": checkpoint.reference,
    }
    meta, background = metadata(payload)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Both files are written and checked in a folder of their own beside `out`, then moved into
    # place, the background first: a crash between the two leaves an export whose background
    # is not the one it names, which is refused (and made again), never used.
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        files = {out: model.SerializeToString()}
        if background is not None:
            files = {background_path(out): background} | files
        for final, content in files.items():
            _write(staging / final.name, content)
        _check_export(source, staging / out.name, reference_fingerprints(checkpoint.model))
        for final in files:
            os.replace(staging / final.name, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _write(path: Path, content: bytes) -> None:
    """Write and fsync a file, readable by other users as the umask allows (open's default:
    mkstemp's 0600 would keep them from the export)."""
    with open(path, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def _onnx_model(source: Path, model: torch.nn.Module) -> onnx.ModelProto:
    """The network, batch size free, as an ONNX model."""
    example = (torch.from_numpy(probe_mel()[:2]),)
    batch = torch.export.Dim("batch")
    quiet = logging.getLogger("torch.onnx")  # it logs every step and every missing torchvision op
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.export's own deprecations
            program = torch.onnx.export(
                model.eval(), example, input_names=[INPUT], output_names=[OUTPUT],
                dynamic_shapes=({0: batch},), opset_version=OPSET, dynamo=True,
                external_data=False, verbose=False, optimize=True,
            )  # fmt: skip
    except Exception as e:  # the exporter raises many types for networks it cannot trace
        raise CheckpointError(source, f"cannot be exported to ONNX: {first_line(e)}") from e
    finally:
        quiet.setLevel(level)
    return program.model_proto


def _check_export(source: Path, export: Path, reference: np.ndarray) -> None:
    """Refuse an export whose fingerprints of the probe are not torch's float32 `reference`."""
    exported = load_onnx(export, source=source)
    fingerprints = OnnxEncoder(exported.model, "float32")(probe_mel())
    cosine = min_cosine(fingerprints, reference)
    if not cosine >= MIN_EXPORT_COSINE:
        raise CheckpointError(source, f"its ONNX export disagrees with it (cosine {cosine:.4f} "
                                      f"< {MIN_EXPORT_COSINE})")  # fmt: skip


def _float16(rows: np.ndarray | None) -> np.ndarray | None:
    """The background as the .pt stores it: it only sets a noise floor."""
    return None if rows is None else rows.astype(np.float16)


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
    An export beside the file is made again, so it never describes an older checkpoint.
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
    if path.with_suffix(".onnx").is_file():
        export_onnx(path, path.with_suffix(".onnx"))
