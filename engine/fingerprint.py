"""Audio → fingerprints: one L2-normalised d-vector per 1 s segment, every 0.5 s.

The encoder runs in float32 unless a faster numeric path is proven right *on this machine*:
`choose_precision` encodes a fixed probe batch both ways and keeps bfloat16 only if every row is
finite and within cosine MIN_COSINE of float32 (DESIGN §9). CPU flags cannot decide it:
on an Intel Xeon with AMX, oneDNN's bfloat16 kernels returned fingerprints at cosine 0.2 to
float32's (and, in some runs, NaN) while AVX512-BF16 machines without AMX were fine.
"""

from __future__ import annotations

import logging
import os
import weakref
from dataclasses import dataclass

import numpy as np
import torch

from engine.audio import frame_segments
from engine.checkpoint import Checkpoint
from engine.errors import NfpError
from engine.features import log_mel
from engine.probe import MIN_COSINE, min_cosine, probe_mel

log = logging.getLogger(__name__)

BATCH_SEGMENTS = 256  # large enough to amortise per-call overhead, small enough for little RAM
PRECISION_ENV = "NFP_PRECISION"  # float32 | bfloat16 | auto (the default)
PRECISIONS = ("auto", "float32", "bfloat16")


@dataclass(frozen=True)
class Precision:
    """The numeric path an encoder runs on this machine, and why."""

    requested: str  # auto | float32 | bfloat16
    chosen: str  # float32 | bfloat16
    reason: str  # one sentence for `nfp info` and the self-test

    def to_json(self) -> dict:
        return {"requested": self.requested, "chosen": self.chosen, "reason": self.reason}


def native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16). Elsewhere bfloat16 is
    emulated and slower than float32, so it is not worth probing; it is never proof of
    correctness (see the module docstring)."""
    supported = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(supported is not None and supported())


def requested_precision(value: str | None = None) -> str:
    """The precision asked for: `value`, else $NFP_PRECISION, else auto."""
    value = (value or os.environ.get(PRECISION_ENV) or "auto").strip().lower()
    if value not in PRECISIONS:
        raise NfpError(f"{PRECISION_ENV}={value!r}: expected one of {', '.join(PRECISIONS)}")
    return value


class Fingerprinter:
    """Runs a checkpoint's encoder on audio. Thread-safe for inference (no state between calls
    but the one-way switch from a fast path back to float32).

    Convolutions run channels-last (oneDNN's preferred layout: same numbers, 1.3× faster here).
    bench/bench_encoder.py measures the numeric paths.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        *,
        batch_segments: int = BATCH_SEGMENTS,
        precision: str | None = None,
    ) -> None:
        self.checkpoint = checkpoint
        self.model = checkpoint.model.eval().to(memory_format=torch.channels_last)
        self.d = checkpoint.d
        self.batch_segments = batch_segments
        self.precision = choose_precision(self, requested_precision(precision))

    @property
    def bfloat16(self) -> bool:
        return self.precision.chosen == "bfloat16"

    def segments(self, segments: np.ndarray) -> np.ndarray:
        """Segments float32 (n, SEGMENT_SAMPLES) → fingerprints float32 (n, d)."""
        out = np.empty((len(segments), self.d), np.float32)
        with torch.inference_mode():
            for i in range(0, len(segments), self.batch_segments):
                batch = np.ascontiguousarray(segments[i : i + self.batch_segments])
                out[i : i + len(batch)] = self.encode(log_mel(batch)).numpy()
        return out

    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel float32 (n, 1, N_MELS, N_FRAMES) → fingerprints float32 (n, d); call it
        under torch.inference_mode(). A fast-path batch that is not finite is recomputed in
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

    def audio(self, audio: np.ndarray) -> np.ndarray:
        """Audio float32 (n,) at SAMPLE_RATE → fingerprints float32 (count_segments(n), d)."""
        return self.segments(frame_segments(audio))

    def probe(self, path: str | None = None) -> np.ndarray:
        """Fingerprints (15, d) of the probe signal (engine.probe) on `path` (float32 or
        bfloat16) without any fallback; by default on the chosen path, fallback included."""
        mel = probe_mel().contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            if path is None:
                return self.encode(mel).numpy()
            return (self.model(mel) if path == "float32" else self.encode_bfloat16(mel)).numpy()


# One decision per loaded model: the probe costs one small batch twice, not once per caller.
_DECISIONS: weakref.WeakKeyDictionary[torch.nn.Module, Precision] = weakref.WeakKeyDictionary()


def choose_precision(fingerprinter: Fingerprinter, requested: str) -> Precision:
    """float32 unless bfloat16 is requested, or asked for by auto and proven by the probe."""
    if requested == "float32":
        return Precision(requested, "float32", f"float32 requested ({PRECISION_ENV})")
    if requested == "bfloat16":
        return Precision(requested, "bfloat16", f"bfloat16 requested ({PRECISION_ENV})")
    cached = _DECISIONS.get(fingerprinter.model)
    if cached is not None:
        return cached
    if not native_bfloat16():
        decision = Precision(requested, "float32", "this CPU has no native bfloat16")
    else:
        decision = _probe_bfloat16(fingerprinter, requested)
    _DECISIONS[fingerprinter.model] = decision
    return decision


def _probe_bfloat16(fingerprinter: Fingerprinter, requested: str) -> Precision:
    cosine = min_cosine(fingerprinter.probe("float32"), fingerprinter.probe("bfloat16"))
    if cosine >= MIN_COSINE:
        return Precision(requested, "bfloat16", f"bfloat16 passed the probe (cosine {cosine:.4f})")
    found = "non-finite output" if np.isnan(cosine) else f"cosine {cosine:.3f} to float32"
    return Precision(requested, "float32", f"bfloat16 failed the probe ({found})")


def check_reference(fingerprinter: Fingerprinter) -> dict:
    """This machine's fingerprints of the probe signal against the reference ones the
    checkpoint carries: {"ok", "cosine", "message"}. Not ok means every answer would be wrong."""
    checkpoint = fingerprinter.checkpoint
    if checkpoint.reference is None:
        return {"ok": True, "cosine": None,
                "message": f"{checkpoint.path.name} carries no reference fingerprints"}  # fmt: skip
    cosine = min_cosine(fingerprinter.probe(), checkpoint.reference)
    if cosine >= MIN_COSINE:
        message = (
            f"fingerprints agree with {checkpoint.path.name}'s reference (cosine {cosine:.4f})"
        )
        return {"ok": True, "cosine": round(cosine, 4), "message": message}
    message = (
        f"{checkpoint.path}: this machine's fingerprints differ from the checkpoint's reference "
        f"(cosine {cosine:.3f} < {MIN_COSINE}, {fingerprinter.precision.chosen}): answers would "
        f"be wrong; try {PRECISION_ENV}=float32"
    )
    return {
        "ok": False,
        "cosine": None if np.isnan(cosine) else round(cosine, 4),
        "message": message,
    }
