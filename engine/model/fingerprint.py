"""Audio → fingerprints: one L2-normalised d-vector per 1 s segment, every 0.5 s.

The log-mel front end is numpy (engine.core.features); the encoder runs on the checkpoint's backend:
ONNX Runtime (engine.model.onnx_backend) or torch (engine.model.torch_backend). Either runs float32
unless a faster numeric path is proven right on this machine by the probe (docs/architecture.md,
Numeric paths); every checkpoint also carries reference fingerprints that `check_reference` holds
this machine's against.
"""

from __future__ import annotations

import numpy as np

from engine.core.audio import frame_segments
from engine.core.errors import NfpError
from engine.core.features import log_mel
from engine.model.checkpoint import Checkpoint
from engine.model.load import make_encoder
from engine.model.precision import PRECISION_ENV, Precision, requested_precision
from engine.model.probe import MIN_COSINE, min_cosine, probe_mel

# Segments per encoder call when fingerprinting files. Measured here (shipped d = 128, ONNX
# Runtime, one thread): 64 a call as fast as 256 or faster (2.0 against 2.4 CPU ms a segment,
# its activations stay in cache), and peak memory 0.4 GB instead of 1.1 GB.
BATCH_SEGMENTS = 64


class Fingerprinter:
    """Runs a checkpoint's encoder on audio; thread-safe."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        batch_segments: int = BATCH_SEGMENTS,
        precision: str | None = None,
        threads: int = 0,
    ) -> None:
        """`threads`: cores one encoder call may use (0: every usable core), for callers that
        run several calls at once (engine.library.parallel.LocalSource)."""
        self.checkpoint = checkpoint
        self.d = checkpoint.d
        self.batch_segments = batch_segments
        self.encoder = make_encoder(checkpoint, requested_precision(precision), threads)

    @property
    def precision(self) -> Precision:
        return self.encoder.precision

    def segments(self, segments: np.ndarray) -> np.ndarray:
        """Segments float32 (n, SEGMENT_SAMPLES) → fingerprints float32 (n, d)."""
        out = np.empty((len(segments), self.d), np.float32)
        for i in range(0, len(segments), self.batch_segments):
            batch = segments[i : i + self.batch_segments]
            out[i : i + len(batch)] = self.encode(log_mel(batch))
        return out

    def encode(self, mel: np.ndarray) -> np.ndarray:
        """Log-mel float32 (n, 1, N_MELS, N_FRAMES) → fingerprints float32 (n, d)."""
        return self.encoder(mel)

    def audio(self, audio: np.ndarray) -> np.ndarray:
        """Audio float32 (n,) at SAMPLE_RATE → fingerprints float32 (count_segments(n), d)."""
        return self.segments(frame_segments(audio))


def check_reference(fingerprinter: Fingerprinter) -> dict:
    """This machine's fingerprints of the probe signal against the reference ones the
    checkpoint carries: {"ok", "cosine", "message"}. Not ok means every answer would be wrong."""
    checkpoint = fingerprinter.checkpoint
    if checkpoint.reference is None:
        return {"ok": True, "cosine": None,
                "message": f"{checkpoint.path.name} carries no reference fingerprints"}  # fmt: skip
    cosine = min_cosine(fingerprinter.encode(probe_mel()), checkpoint.reference)
    if cosine >= MIN_COSINE:
        message = (
            f"fingerprints agree with {checkpoint.path.name}'s reference (cosine {cosine:.4f})"
        )
        return {"ok": True, "cosine": round(cosine, 4), "message": message}
    chosen = fingerprinter.precision.chosen
    fix = (f"try {PRECISION_ENV}=float32" if chosen != "float32"
           else "the checkpoint or its export is damaged: export or install it again")  # fmt: skip
    message = (
        f"{checkpoint.path}: this machine's fingerprints differ from the checkpoint's reference "
        f"(cosine {cosine:.3f} < {MIN_COSINE}, {chosen} on {checkpoint.backend}): answers "
        f"would be wrong; {fix}"
    )
    return {
        "ok": False,
        "cosine": None if np.isnan(cosine) else round(cosine, 4),
        "message": message,
    }


def require_reference(fingerprinter: Fingerprinter) -> None:
    """Refuse to index or answer with fingerprints that are not the checkpoint's reference (a
    machine's wrong numeric path, an export with damaged weights): each answer would be wrong."""
    check = check_reference(fingerprinter)
    if not check["ok"]:
        raise NfpError(check["message"])
