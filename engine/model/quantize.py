"""An export's int8 twin: static QDQ quantisation of its convolutions, calibrated on real music.

Made by `nfp export --int8 MUSIC_FOLDER` where the export is made (it needs the `onnx` package
of the `train` extra); kept beside the export as NAME.int8.onnx with the same metadata, and run
only where the probe passes on the running machine
(engine.model.onnx_backend.choose_onnx_precision). Convolutions only: the layer norms and ELUs
between them stay float32 (quantising them would add a quantise/dequantise pair around every one for
little gain).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from engine.core.audio import AUDIO_EXTENSIONS, frame_segments, load_audio
from engine.core.errors import NfpError
from engine.core.features import log_mel
from engine.model.onnx_backend import INPUT, int8_path

CALIBRATION_SEGMENTS = 512  # measured: 415 segments of 10 tracks gave cosine ≥ 0.995 on others
CALIBRATION_FILES = 16  # spread over this many files of the folder, for many kinds of music
CALIBRATION_BATCH = 32  # segments per calibration run (bounds the calibrator's memory)


def calibration_mels(folder: Path) -> np.ndarray:
    """Log-mel float32 (≤ CALIBRATION_SEGMENTS, 1, N_MELS, N_FRAMES): segments spread evenly
    over up to CALIBRATION_FILES audio files of `folder` (deterministic)."""
    files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    if not files:
        raise NfpError(f"{folder}: no audio files to calibrate the int8 model on")
    files = files[:: max(1, len(files) // CALIBRATION_FILES)][:CALIBRATION_FILES]
    per_file = CALIBRATION_SEGMENTS // len(files)
    mels = []
    for path in files:
        segments = frame_segments(load_audio(path))
        rows = np.linspace(0, len(segments) - 1, min(per_file, len(segments))).astype(int)
        mels.append(log_mel(segments[rows]))
    return np.concatenate(mels)


class _Batches(CalibrationDataReader):
    def __init__(self, mels: np.ndarray) -> None:
        self._batches = iter(np.array_split(mels, max(1, len(mels) // CALIBRATION_BATCH)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT: batch}


def quantize_export(export: Path, mels: np.ndarray) -> Path:
    """Write the int8 twin of `export` beside it, calibrated on log-mel float32
    (n, 1, N_MELS, N_FRAMES); returns its path. The export's metadata travels with it."""
    out = int8_path(export)
    with tempfile.TemporaryDirectory(prefix=".nfp-int8-", dir=out.parent) as tmp:  # one disk
        prepared = Path(tmp) / "prepared.onnx"
        # Symbolic shape inference fails on the exporter's Expand; ONNX's own is enough here.
        quant_pre_process(str(export), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared), str(Path(tmp) / out.name), _Batches(mels),
            quant_format=QuantFormat.QDQ, op_types_to_quantize=["Conv"], per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )  # fmt: skip
        (Path(tmp) / out.name).replace(out)
    return out
