"""The log-mel front end of the seed model: 1 s of 8 kHz audio → a 256 × 32 image in [-1, 1]."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from engine.audio import SAMPLE_RATE, SEGMENT_SAMPLES

N_FFT = 1024  # 128 ms window: fine frequency resolution for 256 mel bands
HOP_LENGTH = 256  # 32 ms; with centred frames, 8000 samples → 32 frames
N_MELS = 256
F_MIN = 300.0  # Hz: below this, room rumble and phone microphones carry little of the music
F_MAX = 4000.0  # Hz: Nyquist at 8 kHz
N_FRAMES = 1 + SEGMENT_SAMPLES // HOP_LENGTH  # 32
TOP_DB = 80.0  # dynamic range kept below each segment's loudest bin
AMIN = 1e-10  # power floor before the logarithm


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default): linear below 1 kHz, logarithmic above."""
    f = np.asarray(f, np.float64)
    f_sp = 200.0 / 3
    min_log_hz, logstep = 1000.0, np.log(6.4) / 27.0
    mel = f / f_sp
    return np.where(
        f >= min_log_hz, min_log_hz / f_sp + np.log(np.maximum(f, 1e-9) / min_log_hz) / logstep, mel
    )


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    f_sp = 200.0 / 3
    min_log_mel, logstep = 1000.0 / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, 1000.0 * np.exp(logstep * (m - min_log_mel)), f_sp * m)


def mel_filterbank_np() -> np.ndarray:
    """Triangular, area-normalised ('slaney') mel filters, float64 (N_MELS, N_FFT // 2 + 1)."""
    fft_hz = np.linspace(0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    mel_hz = _mel_to_hz(np.linspace(_hz_to_mel(F_MIN), _hz_to_mel(F_MAX), N_MELS + 2))
    widths = np.diff(mel_hz)
    ramps = mel_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (mel_hz[2:] - mel_hz[:-2]))[:, None]


@lru_cache(maxsize=1)
def mel_filterbank() -> torch.Tensor:
    """The filterbank as a float32 tensor (N_MELS, N_FFT // 2 + 1), built once."""
    return torch.from_numpy(mel_filterbank_np().astype(np.float32))


@lru_cache(maxsize=1)
def _window() -> torch.Tensor:
    return torch.hann_window(N_FFT)


def log_mel(segments: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Segments float32 (B, SEGMENT_SAMPLES) → log-mel float32 (B, 1, N_MELS, N_FRAMES) in [-1, 1].

    Each segment is normalised by its own maximum (not the batch's, as the seed did), so a
    fingerprint does not depend on what else is in the batch, and loudness does not matter.
    """
    if isinstance(segments, np.ndarray):  # framing views are read-only; torch wants its own
        segments = np.array(segments, np.float32)
    x = torch.as_tensor(segments, dtype=torch.float32)
    spec = torch.stft(
        x, N_FFT, HOP_LENGTH, window=_window(), center=True, pad_mode="reflect", return_complex=True
    )
    power = spec.real.square() + spec.imag.square()
    mel = torch.matmul(mel_filterbank(), power)
    db = 10.0 * torch.log10(mel.clamp_min(AMIN))
    db_max = db.amax(dim=(1, 2), keepdim=True)
    db = torch.maximum(db, db_max - TOP_DB)
    return ((db - db_max) / (TOP_DB / 2) + 1.0).unsqueeze(1)
