from pathlib import Path

import numpy as np
import torch

from engine.core.features import (
    AMIN,
    HOP_LENGTH,
    N_FFT,
    N_FRAMES,
    N_MELS,
    TOP_DB,
    log_mel,
    mel_filterbank,
)

GOLDEN = Path(__file__).parent / "data" / "logmel_golden.npz"


def test_matches_numpy_reference_golden_file():
    golden = np.load(GOLDEN)
    out = log_mel(golden["audio"])
    np.testing.assert_allclose(out, golden["log_mel"], atol=1e-4)


def test_shape_and_range(rng):
    out = log_mel(rng.standard_normal((3, 8000)).astype(np.float32))
    assert out.dtype == np.float32 and out.shape == (3, 1, N_MELS, N_FRAMES) == (3, 1, 256, 32)
    assert out.min() >= -1.0 and out.max() == 1.0


def test_loudness_does_not_change_features(rng):
    x = rng.standard_normal((1, 8000)).astype(np.float32)
    np.testing.assert_allclose(log_mel(x), log_mel(x * 0.01), atol=1e-4, rtol=0)


def test_segments_are_normalised_independently(rng):
    x = rng.standard_normal((2, 8000)).astype(np.float32)
    alone = log_mel(x[:1])
    together = log_mel(np.concatenate([x[:1], 100 * x[1:]]))[:1]
    np.testing.assert_allclose(alone, together, rtol=1e-6)


def test_filterbank_covers_300_to_4000_hz():
    fb = mel_filterbank()
    bins_hz = np.linspace(0, 4000, fb.shape[1])
    used = bins_hz[fb.sum(axis=0) > 0]
    assert used.min() >= 290 and used.max() <= 4000
    assert (fb.sum(axis=1) > 0).all()  # no empty band


def test_frames_follow_torch_stft_centred_with_reflected_edges(rng):
    """The checkpoints were trained on torch.stft's framing; the numpy front end keeps it."""
    x = rng.standard_normal((2, 8000)).astype(np.float32)
    window = torch.hann_window(N_FFT)
    spec = torch.stft(torch.from_numpy(x), N_FFT, HOP_LENGTH, window=window, center=True,
                      pad_mode="reflect", return_complex=True)  # fmt: skip
    power = spec.abs().square().numpy()  # (2, 513, 32)
    mel = np.einsum("mf,bft->bmt", mel_filterbank(), power)
    db = 10 * np.log10(np.maximum(mel, AMIN))
    top = db.max(axis=(1, 2), keepdims=True)
    expected = (np.maximum(db, top - TOP_DB) - top) / (TOP_DB / 2) + 1
    np.testing.assert_allclose(log_mel(x)[:, 0], expected, atol=1e-4)
