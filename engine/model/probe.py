"""The fixed probe signal and the reference fingerprints a checkpoint carries of it.

A checkpoint stores the float32 fingerprints of `probe_audio()` made where it was saved
(engine.model.torch_backend.reference_fingerprints); any machine can then check that its own agree
(engine.model.fingerprint.check_reference) before it indexes or answers, instead of passing a
self-test with wrong numbers.
"""

from __future__ import annotations

import numpy as np

from engine.core.audio import SAMPLE_RATE, frame_segments
from engine.core.features import log_mel

PROBE_S = 8.0  # the probe signal: 15 segments
PROBE_SEED = 20211  # fixed forever: checkpoints store the probe's reference fingerprints
MIN_COSINE = 0.99  # fingerprints this close to the reference (or to float32) on every row agree


def probe_audio() -> np.ndarray:
    """The probe signal float32 (PROBE_S * SAMPLE_RATE,): chords of decaying partials over a
    little noise, music-like enough to exercise every layer. Deterministic (PCG64 is stable)."""
    rng = np.random.default_rng(PROBE_SEED)
    note = SAMPLE_RATE // 4
    t = np.arange(note) / SAMPLE_RATE
    notes = []
    for _ in range(int(PROBE_S * 4)):
        freqs = 110 * 2 ** (rng.integers(0, 48, 3) / 12)
        chord = np.sin(2 * np.pi * freqs[:, None] * t).sum(0) * np.exp(-3 * t)
        notes.append(chord + 0.05 * rng.standard_normal(note))
    return (0.2 * np.concatenate(notes)).astype(np.float32)


def probe_mel() -> np.ndarray:
    """The probe's log-mel batch float32 (15, 1, N_MELS, N_FRAMES)."""
    return log_mel(frame_segments(probe_audio()))


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest row-wise cosine of fingerprints (n, d) and (n, d); NaN if any row is not finite
    (so every comparison with a bar fails)."""
    if a.shape != b.shape or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return float("nan")
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.min(np.einsum("nd,nd->n", a, b) / np.maximum(norms, 1e-12)))


def same_neighbours(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether each row of fingerprints a (n, d) is nearest (inner product) to the same row of
    b (n, d) as that row of b is: a numeric path that moves fingerprints must not move which
    stored segment answers."""
    return bool(np.array_equal(np.argmax(a @ b.T, axis=1), np.argmax(b @ b.T, axis=1)))
