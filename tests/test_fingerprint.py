import numpy as np
import pytest
from audio_files import music_like

from engine.audio import SAMPLE_RATE, count_segments
from engine.checkpoint import default_checkpoint_path, load_checkpoint
from engine.fingerprint import Fingerprinter


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return music_like(6.0, SAMPLE_RATE, 3)


@pytest.mark.parametrize("bfloat16", [False, True])
def test_fingerprints_are_unit_vectors_one_per_hop_and_batch_independent(audio, bfloat16):
    fingerprinter = Fingerprinter(load_checkpoint(default_checkpoint_path()), bfloat16=bfloat16)
    fp = fingerprinter.audio(audio)
    assert fp.shape == (count_segments(len(audio)), 128) and fp.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fp, axis=1), 1.0, atol=1e-5)
    small_batches = Fingerprinter(fingerprinter.checkpoint, batch_segments=3, bfloat16=bfloat16)
    np.testing.assert_allclose(small_batches.audio(audio), fp, atol=1e-5)


def test_bfloat16_fingerprints_stay_close_to_float32(audio):
    """The shipped encoder under bfloat16 autocast (used where the CPU has it natively)."""
    checkpoint = load_checkpoint(default_checkpoint_path())
    exact = Fingerprinter(checkpoint, bfloat16=False).audio(audio)
    fast = Fingerprinter(checkpoint, bfloat16=True).audio(audio)
    cosine = np.einsum("nd,nd->n", exact, fast)
    assert cosine.min() > 0.98 and cosine.mean() > 0.99
