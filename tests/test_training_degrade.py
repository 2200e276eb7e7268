"""Degradations: shapes, SNR, filters and masks do what they say, on synthetic signals."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from training.augment import spec_augment
from training.data import PairSampler, gather_at_speed
from training.degrade import (
    LEVELS,
    DegradeParams,
    Sources,
    at_tempo,
    band_response,
    clip_at_gain,
    colored_noise,
    degrade,
    draw_noise,
    lead_in_gate,
    mix_at_snr,
    mp3_roundtrip,
)


def synthetic_sources(rng: np.random.Generator) -> Sources:
    """Known noise: white 'background', a 300 Hz tone as 'babble', short decaying IRs."""
    t = np.arange(8000 * 4) / 8000
    irs = np.zeros((6, 800), np.float32)
    irs[:, 0] = 1.0
    irs[:, 1:] = 0.1 * rng.standard_normal((6, 799)) * np.exp(-np.arange(799) / 200)
    irs /= np.sqrt((irs**2).sum(axis=1, keepdims=True))
    return Sources(
        background=rng.standard_normal(8000 * 5).astype(np.float32),
        babble=np.sin(2 * np.pi * 300 * t).astype(np.float32) * np.sqrt(2),
        irs=irs,
        rt60_s=np.linspace(0.2, 1.0, 6).astype(np.float32),
    )


def power_db(x: np.ndarray) -> np.ndarray:
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2, axis=-1))


def test_mix_at_snr_hits_the_requested_ratio(rng: np.random.Generator) -> None:
    signal = rng.standard_normal((5, 8000)).astype(np.float32) * np.arange(1, 6)[:, None]
    noise = rng.standard_normal((5, 8000)).astype(np.float32) * 7
    snr = np.array([-5.0, 0.0, 3.0, 10.0, 20.0])
    mixed = mix_at_snr(signal, noise, snr)
    assert mixed.shape == signal.shape and mixed.dtype == np.float32
    np.testing.assert_allclose(power_db(signal) - power_db(mixed - signal), snr, atol=1e-3)


def test_mix_at_snr_with_silent_noise_keeps_the_signal(rng: np.random.Generator) -> None:
    signal = rng.standard_normal((2, 100)).astype(np.float32)
    mixed = mix_at_snr(signal, np.zeros((2, 100), np.float32), np.array([0.0, 5.0]))
    np.testing.assert_array_equal(mixed, signal)


def test_colored_noise_slopes(rng: np.random.Generator) -> None:
    noise = colored_noise(3, 2**15, np.array([0.0, 1.0, 2.0]), rng)
    np.testing.assert_allclose(np.sqrt(np.mean(noise**2, axis=1)), 1.0, rtol=1e-5)
    spectrum = np.abs(np.fft.rfft(noise, axis=1)) ** 2
    freqs = np.fft.rfftfreq(2**15, 1 / 8000)
    low = spectrum[:, (freqs > 100) & (freqs < 200)].mean(axis=1)
    high = spectrum[:, (freqs > 1600) & (freqs < 3200)].mean(axis=1)
    # Four octaves apart: white flat, pink −3 dB/octave, brown −6 dB/octave.
    slope_db = 10 * np.log10(high / low) / 4
    np.testing.assert_allclose(slope_db, [0.0, -3.0, -6.0], atol=0.6)


def test_band_response_cuts_outside_the_band(rng: np.random.Generator) -> None:
    freqs = np.fft.rfftfreq(1024, 1 / 8000)
    params = DegradeParams(low_cut_hz=(400.0, 400.0), high_cut_hz=(2000.0, 2000.0), eq_db=0.0)
    response = band_response(2, freqs, params, rng)
    assert response.shape == (2, len(freqs))
    at = lambda hz: response[0, np.argmin(np.abs(freqs - hz))]  # noqa: E731
    assert at(1000) > 0.9 and at(50) < 0.02 and at(3900) < 0.3


def test_degrade_shapes_and_snr(rng: np.random.Generator) -> None:
    sources = synthetic_sources(rng)
    audio = rng.standard_normal((8, 4000 + 8000)).astype(np.float32)
    params = DegradeParams(snr_db=(5.0, 5.0), ir_prob=0.0, echo_prob=0.0, band_prob=0.0,
                           noise_probs=(1.0, 0.0, 0.0))  # fmt: skip
    out = degrade(audio, 8000, params, sources, rng)
    assert out.shape == (8, 8000) and out.dtype == np.float32
    # Without filters the kept part is the last 8000 samples plus noise at exactly 5 dB.
    clean = audio[:, 4000:]
    np.testing.assert_allclose(power_db(clean) - power_db(out - clean), 5.0, atol=0.05)


@pytest.mark.parametrize("level", sorted(LEVELS))
def test_every_level_degrades_any_length(level: str, rng: np.random.Generator) -> None:
    sources = synthetic_sources(rng)
    audio = rng.standard_normal((3, 4000 + 24000)).astype(np.float32)
    out = degrade(audio, 24000, LEVELS[level], sources, rng)
    assert out.shape == (3, 24000) and np.isfinite(out).all()


def test_levels_get_harder() -> None:
    snr = [np.mean(LEVELS[name].snr_db) for name in ("low", "mid", "high")]
    rt60 = [np.mean(LEVELS[name].rt60_s) for name in ("low", "mid", "high")]
    assert snr == sorted(snr, reverse=True) and rt60 == sorted(rt60)


def test_draw_noise_uses_each_kind(rng: np.random.Generator) -> None:
    sources = synthetic_sources(rng)
    babble_only = DegradeParams(noise_probs=(0.0, 1.0, 0.0))
    noise = draw_noise(4, 8000, babble_only, sources, rng)
    spectrum = np.abs(np.fft.rfft(noise, axis=1))
    assert (np.argmax(spectrum, axis=1) == 300).all()  # 8000-point FFT: bin = Hz


def test_spec_augment_masks_with_the_mean() -> None:
    mel = torch.rand(6, 1, 256, 32) * 2 - 1
    gen = torch.Generator().manual_seed(0)
    out = spec_augment(mel, gen, cutout_prob=1.0, freq_masks=2, freq_mask_max=24)
    assert out.shape == mel.shape
    changed = out != mel
    assert changed.any(dim=(1, 2, 3)).all()  # every example got a mask
    means = mel.mean(dim=(1, 2, 3))
    for i in range(6):
        assert torch.allclose(out[i][changed[i]], means[i])
    none = spec_augment(mel, gen, cutout_prob=0.0, freq_masks=0)
    assert torch.equal(none, mel)


@pytest.mark.parametrize("kbps", [32, 64])
def test_mp3_round_trip_keeps_the_music_in_place(kbps: int, rng: np.random.Generator) -> None:
    """The codec's delay is taken out: the decoded audio lines up with the input sample for
    sample, at the input's level, and lower bitrates lose more of it."""
    t = np.arange(3 * 8000) / 8000
    tone = np.sin(2 * np.pi * 440 * t) * (0.5 + 0.5 * np.sin(2 * np.pi * 1.3 * t))
    audio = (0.3 * tone + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    out = mp3_roundtrip(audio, kbps)
    assert out.shape == audio.shape and out.dtype == np.float32
    lags = {lag: float(np.dot(audio[100:-100], np.roll(out, lag)[100:-100])) for lag in (-1, 0, 1)}
    assert max(lags, key=lags.get) == 0
    assert np.corrcoef(audio, out)[0, 1] > 0.98
    assert abs(power_db(out) - power_db(audio)) < 1.0


def test_clipping_and_the_early_start(rng: np.random.Generator) -> None:
    audio = rng.standard_normal((3, 4000)).astype(np.float32) * 0.1
    clipped = clip_at_gain(audio, np.array([0.0, 6.0, 12.0]))
    assert np.abs(clipped).max() <= 1.0
    np.testing.assert_allclose(np.abs(clipped[0]).max(), 1.0, rtol=1e-5)  # 0 dB: peak at 1
    assert (np.abs(clipped[1:]) == 1.0).sum(axis=1).min() > 10  # louder rows are clipped
    gate = lead_in_gate(4, 1000, (0.2, 0.3), rng)
    silent = (gate == 0).sum(axis=1)
    assert ((silent >= 200) & (silent <= 300)).all() and (gate[:, 300:] == 1).all()


def test_speaker_and_rumble_filter_shape_the_spectrum(rng: np.random.Generator) -> None:
    """A second device and the high-pass cut the bass more than one device alone."""
    sources = synthetic_sources(rng)
    white = rng.standard_normal((64, 8000 + 8000)).astype(np.float32)
    base = dict(ir_prob=0.0, echo_prob=0.0, band_prob=1.0, snr_db=(80.0, 80.0), eq_db=0.0,
                low_cut_hz=(300.0, 300.0), high_cut_hz=(3000.0, 3000.0))  # fmt: skip
    one = degrade(white, 8000, DegradeParams(**base), sources, rng)
    chain = DegradeParams(**base, speaker_prob=1.0, high_pass_prob=1.0, high_pass_hz=(150.0, 150.0))
    two = degrade(white, 8000, chain, sources, rng)
    freqs = np.fft.rfftfreq(8000, 1 / 8000)

    def band_db(x: np.ndarray, lo: float, hi: float) -> float:
        spectrum = np.abs(np.fft.rfft(x, axis=1)) ** 2
        return 10 * np.log10(spectrum[:, (freqs >= lo) & (freqs < hi)].mean())

    bass_drop = lambda x: band_db(x, 1000, 2000) - band_db(x, 80, 160)  # noqa: E731
    assert bass_drop(two) > bass_drop(one) + 10


def test_a_tempo_change_keeps_the_pitch_and_the_start() -> None:
    t = np.arange(10 * 8000) / 8000
    clicks = (np.sin(2 * np.pi * 440 * t) * (t % 1 < 0.1)).astype(np.float32)  # a beep a second
    for tempo in (0.95, 1.05):
        out = at_tempo(clicks, tempo)
        assert len(out) == pytest.approx(len(clicks) / tempo, abs=200)
        spectrum = np.abs(np.fft.rfft(out[:16000]))
        # Hz: the pitch is kept (a speed change would move it 22 Hz)
        assert np.argmax(spectrum) / 2 == pytest.approx(440, abs=5)
        # The beeps now come every 1 / tempo seconds, the first still at the start.
        frames = np.abs(out[: len(out) // 80 * 80]).reshape(-1, 80).max(axis=1) > 0.5  # 10 ms
        onsets = np.flatnonzero(np.diff(frames.astype(int)) == 1) * 0.01
        assert frames[0] and onsets[4] == pytest.approx(5 / tempo, abs=0.03)


def test_gather_at_speed_plays_faster_and_slower() -> None:
    t = np.arange(4 * 8000) / 8000
    tone = np.sin(2 * np.pi * 500 * t).astype(np.float16)
    rows = gather_at_speed(tone, np.array([0, 100, 200]), np.array([1.0, 0.95, 1.05]), 8000)
    np.testing.assert_allclose(rows[0], tone[:8000].astype(np.float32), atol=1e-6)
    peaks = [np.argmax(np.abs(np.fft.rfft(row))) for row in rows]  # 1 Hz bins
    assert peaks == [500, 475, 525]


def test_sampled_replicas_at_another_speed_start_with_their_clean_segment(
    rng: np.random.Generator,
) -> None:
    # Noise below 100 Hz: it decorrelates over ~40 samples, so only an aligned start matches.
    spectrum = np.fft.rfft(rng.standard_normal(30 * 8000))
    spectrum[100 * 30 :] = 0
    audio = np.fft.irfft(spectrum).astype(np.float32)
    audio = (audio / np.abs(audio).max()).astype(np.float16)
    plain = DegradeParams(snr_db=(60.0, 60.0), noise_probs=(1.0, 0.0, 0.0), ir_prob=0.0,
                          echo_prob=0.0, band_prob=0.0)  # fmt: skip
    sampler = PairSampler(audio, np.array([0, len(audio)]), synthetic_sources(rng), plain,
                          offset_s=0.0, speed_prob=1.0, speed_max=0.05)  # fmt: skip
    clean, replica = sampler.sample(16, rng)
    head = slice(0, 200)  # 25 ms: a 5 % speed change drifts at most 10 samples
    a, b = clean[:, head], replica[:, head]
    corr = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert np.median(corr) > 0.9
    # … and they do differ in speed: over the whole second they drift apart.
    whole = np.sum(clean * replica, axis=1) / (
        np.linalg.norm(clean, axis=1) * np.linalg.norm(replica, axis=1))  # fmt: skip
    assert np.median(whole) < np.median(corr)
