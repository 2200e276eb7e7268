from pathlib import Path

import numpy as np
import torch

from engine.features import N_FRAMES, N_MELS, log_mel, mel_filterbank

GOLDEN = Path(__file__).parent / "data" / "logmel_golden.npz"


def test_matches_numpy_reference_golden_file():
    golden = np.load(GOLDEN)
    out = log_mel(golden["audio"]).numpy()
    np.testing.assert_allclose(out, golden["log_mel"], atol=1e-4)


def test_shape_and_range(rng):
    out = log_mel(torch.from_numpy(rng.standard_normal((3, 8000)).astype(np.float32)))
    assert out.shape == (3, 1, N_MELS, N_FRAMES) == (3, 1, 256, 32)
    assert out.min() >= -1.0 and out.max() == 1.0


def test_loudness_does_not_change_features(rng):
    x = rng.standard_normal((1, 8000)).astype(np.float32)
    torch.testing.assert_close(log_mel(x), log_mel(x * 0.01), atol=1e-4, rtol=0)


def test_segments_are_normalised_independently(rng):
    x = rng.standard_normal((2, 8000)).astype(np.float32)
    alone = log_mel(x[:1])
    together = log_mel(np.concatenate([x[:1], 100 * x[1:]]))[:1]
    torch.testing.assert_close(alone, together)


def test_filterbank_covers_300_to_4000_hz():
    fb = mel_filterbank().numpy()
    bins_hz = np.linspace(0, 4000, fb.shape[1])
    used = bins_hz[fb.sum(axis=0) > 0]
    assert used.min() >= 290 and used.max() <= 4000
    assert (fb.sum(axis=1) > 0).all()  # no empty band
