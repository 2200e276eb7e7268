"""Writes logmel_golden.npz: a reference log-mel computed with numpy alone (no torch).

Run once: `python tests/data/make_golden.py`. The test compares engine.core.features.log_mel against
it, so a change of the front end that changes the model's input shows up.
"""

from pathlib import Path

import numpy as np

from engine.core.features import AMIN, HOP_LENGTH, N_FFT, TOP_DB, mel_filterbank_np


def reference_log_mel(x: np.ndarray) -> np.ndarray:
    padded = np.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2)), mode="reflect")
    n_frames = 1 + x.shape[1] // HOP_LENGTH
    idx = np.arange(N_FFT)[None, :] + HOP_LENGTH * np.arange(n_frames)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann
    frames = padded[:, idx] * window
    power = np.abs(np.fft.rfft(frames, axis=-1)) ** 2  # (B, T, F)
    mel = np.einsum("mf,btf->bmt", mel_filterbank_np(), power)
    db = 10 * np.log10(np.maximum(mel, AMIN))
    db_max = db.max(axis=(1, 2), keepdims=True)
    db = np.maximum(db, db_max - TOP_DB)
    return ((db - db_max) / (TOP_DB / 2) + 1)[:, None].astype(np.float32)


def golden_input() -> np.ndarray:
    t = np.arange(8000) / 8000
    chirp = np.sin(2 * np.pi * (300 * t + 1700 * t**2))
    noise = np.random.default_rng(0).standard_normal(8000) * 0.1
    return np.stack([chirp, chirp * 0.01 + noise]).astype(np.float64)


if __name__ == "__main__":
    x = golden_input()
    out = Path(__file__).with_name("logmel_golden.npz")
    np.savez_compressed(out, audio=x.astype(np.float32), log_mel=reference_log_mel(x))
    print(f"wrote {out}")
