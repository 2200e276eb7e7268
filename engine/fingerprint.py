"""Audio → fingerprints: one L2-normalised d-vector per 1 s segment, every 0.5 s."""

from __future__ import annotations

import numpy as np
import torch

from engine.audio import frame_segments
from engine.checkpoint import Checkpoint
from engine.features import log_mel

BATCH_SEGMENTS = 256  # large enough to amortise per-call overhead, small enough for little RAM


class Fingerprinter:
    """Runs a checkpoint's encoder on audio. Thread-safe for inference (no state between calls)."""

    def __init__(self, checkpoint: Checkpoint, *, batch_segments: int = BATCH_SEGMENTS) -> None:
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval()
        self.d = checkpoint.d
        self.batch_segments = batch_segments

    def segments(self, segments: np.ndarray) -> np.ndarray:
        """Segments float32 (n, SEGMENT_SAMPLES) → fingerprints float32 (n, d)."""
        out = np.empty((len(segments), self.d), np.float32)
        with torch.inference_mode():
            for i in range(0, len(segments), self.batch_segments):
                batch = np.ascontiguousarray(segments[i : i + self.batch_segments])
                out[i : i + len(batch)] = self.model(log_mel(batch)).numpy()
        return out

    def audio(self, audio: np.ndarray) -> np.ndarray:
        """Audio float32 (n,) at SAMPLE_RATE → fingerprints float32 (count_segments(n), d)."""
        return self.segments(frame_segments(audio))
