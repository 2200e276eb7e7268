"""Batched degradations: a loudspeaker, room reverb, echo, a microphone, background noise at a
chosen SNR, and what a phone does after that (gain and clipping, a low-bitrate MP3).

Everything works on whole batches with numpy FFTs (one forward and one inverse FFT per batch for
all the filtering), so making a training batch costs little next to the model step.

The evaluation levels follow the KAIST report's Table 3 idea (noise, echo / delay, reverb, each
harder from low to high); they are defined once, in LEVELS, and drawn from the "eval" half of the
degradation bank (noise.py), which shares no recording, voice or room with the "train" half.
"""

from __future__ import annotations

import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from engine.core.audio import SAMPLE_RATE

NOISE_KINDS = ("background", "babble", "synthetic")
EQ_POINTS = 8  # random gains across the band, linearly interpolated: a device's uneven response


@dataclass(frozen=True)
class DegradeParams:
    """How a replica is degraded; ranges are drawn uniformly per example."""

    snr_db: tuple[float, float] = (0.0, 10.0)  # music-to-noise ratio
    noise_probs: tuple[float, float, float] = (0.5, 0.25, 0.25)  # background, babble, synthetic
    ir_prob: float = 0.8  # share of examples played in a simulated room
    rt60_s: tuple[float, float] = (0.2, 1.0)  # room reverberation time range
    echo_prob: float = 0.2  # share with one discrete echo (a reflection or a delay effect)
    echo_delay_s: tuple[float, float] = (0.05, 0.3)
    echo_gain: tuple[float, float] = (0.2, 0.6)
    band_prob: float = 0.7  # share heard through a band-limited microphone / small speaker
    low_cut_hz: tuple[float, float] = (100.0, 600.0)
    high_cut_hz: tuple[float, float] = (2500.0, 4000.0)
    eq_db: float = 6.0  # ± range of the random EQ gains
    # A second device in the chain: the music plays through a loudspeaker and is recorded by a
    # microphone, each with its own band edges and EQ (the same ranges).
    speaker_prob: float = 0.0
    # The recorder's rumble filter: a first-order high-pass with its corner in this range.
    high_pass_prob: float = 0.0
    high_pass_hz: tuple[float, float] = (20.0, 150.0)
    # Automatic gain gone wrong: the recording is scaled by a gain in this range (dB, relative to
    # a peak of 1) and clipped at full scale.
    clip_prob: float = 0.0
    clip_gain_db: tuple[float, float] = (0.0, 12.0)
    # The query starts before the music is heard: this share of it holds only the noise.
    lead_prob: float = 0.0
    lead_share: tuple[float, float] = (0.0, 0.3)
    # The phone sends the recording as a low-bitrate MP3 (kbit/s; MPEG-2.5 at 8 kHz).
    mp3_prob: float = 0.0
    mp3_kbps: tuple[int, ...] = (32, 48, 64)


# Evaluation levels (one table; the model cards quote it). Every query at a level is played
# through a loudspeaker into a room and recorded by a microphone over real noise, as a phone held
# up in a room hears it; "high" adds what the phone then does (clipping, MP3, an early start).
LEVELS: dict[str, DegradeParams] = {
    "low": DegradeParams(snr_db=(10.0, 20.0), ir_prob=1.0, rt60_s=(0.2, 0.4), echo_prob=0.0,
                         band_prob=1.0, low_cut_hz=(100.0, 200.0), high_cut_hz=(3500.0, 4000.0),
                         eq_db=3.0),
    "mid": DegradeParams(snr_db=(5.0, 15.0), noise_probs=(0.6, 0.4, 0.0), ir_prob=1.0,
                         rt60_s=(0.3, 0.9), echo_prob=0.3, echo_delay_s=(0.05, 0.15),
                         echo_gain=(0.2, 0.4), band_prob=1.0, low_cut_hz=(150.0, 400.0),
                         high_cut_hz=(2800.0, 3800.0), eq_db=6.0, speaker_prob=1.0,
                         high_pass_prob=1.0),
    "high": DegradeParams(snr_db=(0.0, 10.0), noise_probs=(0.6, 0.4, 0.0), ir_prob=1.0,
                          rt60_s=(0.5, 1.0), echo_prob=0.5, echo_delay_s=(0.1, 0.3),
                          echo_gain=(0.3, 0.6), band_prob=1.0, low_cut_hz=(200.0, 600.0),
                          high_cut_hz=(2500.0, 3500.0), eq_db=9.0, speaker_prob=1.0,
                          high_pass_prob=1.0, clip_prob=0.5, lead_prob=0.5, mp3_prob=1.0),
}  # fmt: skip


@dataclass(frozen=True)
class Sources:
    """One half ("train" or "eval") of the degradation bank, in memory.

    background float32 (n_bg,), babble float32 (n_bb,): long unit-RMS recordings to cut windows
    from; irs float32 (n_ir, L) unit-energy room responses starting at the direct path; rt60_s
    float32 (n_ir,).
    """

    background: np.ndarray
    babble: np.ndarray
    irs: np.ndarray
    rt60_s: np.ndarray

    @classmethod
    def load(cls, bank: str | Path, half: str) -> Sources:
        """Read one half of a bank written by noise.build_bank."""
        path = Path(bank)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no degradation bank (run `nfp train noise` first)")
        with np.load(path) as data:
            return cls(
                background=data[f"{half}_background"].astype(np.float32),
                babble=data[f"{half}_babble"].astype(np.float32),
                irs=data[f"{half}_ir"].astype(np.float32),
                rt60_s=data[f"{half}_rt60"].astype(np.float32),
            )


def degrade(
    audio: np.ndarray, n_out: int, params: DegradeParams, sources: Sources, rng: np.random.Generator
) -> np.ndarray:
    """Degrade a batch: audio float32 (B, n_ctx) → float32 (B, n_out).

    The last n_out samples are what is kept; the n_ctx - n_out samples before them only feed the
    reverb and echo tails, as a room would have heard the music before the query started.
    """
    audio = np.asarray(audio, np.float32)
    batch, n_ctx = audio.shape
    pre = n_ctx - n_out
    filtered = _filter(audio, params, sources, rng)[:, pre : pre + n_out]
    use_lead = rng.random(batch) < params.lead_prob
    if use_lead.any():
        filtered[use_lead] *= lead_in_gate(int(use_lead.sum()), n_out, params.lead_share, rng)
    noise = draw_noise(batch, n_out, params, sources, rng)
    snr_db = rng.uniform(*params.snr_db, size=batch)
    out = mix_at_snr(filtered, noise, snr_db)
    use_clip = rng.random(batch) < params.clip_prob
    if use_clip.any():
        out[use_clip] = clip_at_gain(
            out[use_clip], rng.uniform(*params.clip_gain_db, use_clip.sum())
        )
    for row in np.flatnonzero(rng.random(batch) < params.mp3_prob):
        out[row] = mp3_roundtrip(out[row], int(rng.choice(params.mp3_kbps)))
    return out


def lead_in_gate(
    count: int, n: int, share: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """0/1 gains float32 (count, n): each row silent for a random share of its start."""
    first = (rng.uniform(*share, size=count) * n).astype(np.int64)
    return (np.arange(n)[None, :] >= first[:, None]).astype(np.float32)


def clip_at_gain(audio: np.ndarray, gain_db: np.ndarray) -> np.ndarray:
    """Rows of audio float32 (B, n) scaled to a peak of gain_db (B,) dB, clipped at ±1."""
    peak = np.maximum(np.abs(audio).max(axis=1, keepdims=True), 1e-9)
    scaled = audio / peak * (10 ** (np.asarray(gain_db)[:, None] / 20))
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


def mp3_roundtrip(audio: np.ndarray, kbps: int) -> np.ndarray:
    """audio float32 (n,) at SAMPLE_RATE encoded as MP3 at kbps and decoded again, float32 (n,),
    realigned (the codec's delay found by cross-correlation) and trimmed or padded to n."""
    peak = max(float(np.abs(audio).max()), 1e-9)
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp3") as out:
        stream = out.add_stream("libmp3lame", rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = kbps * 1000
        frame = av.AudioFrame.from_ndarray((audio / peak)[None, :].astype(np.float32), "flt",
                                           "mono")  # fmt: skip
        frame.sample_rate = SAMPLE_RATE
        for packet in (*stream.encode(frame), *stream.encode(None)):
            out.mux(packet)
    buf.seek(0)
    with av.open(buf, "r") as src:
        decoded = np.concatenate([f.to_ndarray().reshape(-1) for f in src.decode(audio=0)])
    return _realign(decoded.astype(np.float32), audio / peak) * peak


MP3_MAX_DELAY = 2400  # samples (0.3 s): more than any MP3 encoder and decoder add together


def _realign(decoded: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """decoded float32 (m,) shifted to best match reference float32 (n,), as (n,)."""
    n = len(reference)
    decoded = np.concatenate([decoded, np.zeros(n + MP3_MAX_DELAY, np.float32)])
    probe = reference[: min(n, 4 * SAMPLE_RATE)]
    n_fft = 1 << int(np.ceil(np.log2(len(probe) + MP3_MAX_DELAY + len(probe))))
    corr = np.fft.irfft(np.fft.rfft(decoded[: len(probe) + MP3_MAX_DELAY], n_fft)
                        * np.conj(np.fft.rfft(probe, n_fft)), n_fft)  # fmt: skip
    lag = int(np.argmax(corr[: MP3_MAX_DELAY + 1]))
    return decoded[lag : lag + n]


def _filter(
    audio: np.ndarray, params: DegradeParams, sources: Sources, rng: np.random.Generator
) -> np.ndarray:
    """Room, echo and device in one FFT pass: float32 (B, n) → float32 (B, n)."""
    batch, n = audio.shape
    ir_len = sources.irs.shape[1]
    n_fft = 1 << int(np.ceil(np.log2(n + ir_len)))
    freqs = np.fft.rfftfreq(n_fft, 1.0 / SAMPLE_RATE)  # (F,)
    response = np.ones((batch, len(freqs)), np.complex64)
    use_ir = rng.random(batch) < params.ir_prob
    if use_ir.any():
        irs = sources.irs[pick_irs(int(use_ir.sum()), params.rt60_s, sources, rng)]
        response[use_ir] *= np.fft.rfft(irs, n_fft).astype(np.complex64)
    use_echo = rng.random(batch) < params.echo_prob
    if use_echo.any():
        response[use_echo] *= echo_response(int(use_echo.sum()), freqs, params, rng)
    for prob in (params.band_prob, params.speaker_prob):
        use_band = rng.random(batch) < prob
        if use_band.any():
            response[use_band] *= band_response(int(use_band.sum()), freqs, params, rng)
    use_high_pass = rng.random(batch) < params.high_pass_prob
    if use_high_pass.any():
        corner = rng.uniform(*params.high_pass_hz, size=(int(use_high_pass.sum()), 1))
        response[use_high_pass] *= (1j * freqs / (1j * freqs + corner)).astype(np.complex64)
    spectrum = np.fft.rfft(audio, n_fft) * response
    return np.fft.irfft(spectrum, n_fft)[:, :n].astype(np.float32)


def pick_irs(
    n: int, rt60_s: tuple[float, float], sources: Sources, rng: np.random.Generator
) -> np.ndarray:
    """Indices (n,) of random impulse responses whose RT60 lies in the range (all if none do)."""
    candidates = np.flatnonzero((sources.rt60_s >= rt60_s[0]) & (sources.rt60_s <= rt60_s[1]))
    if candidates.size == 0:
        candidates = np.arange(len(sources.rt60_s))
    return rng.choice(candidates, size=n)


def echo_response(
    n: int, freqs: np.ndarray, params: DegradeParams, rng: np.random.Generator
) -> np.ndarray:
    """Frequency response complex64 (n, F) of the direct sound plus one delayed copy."""
    delay_s = rng.uniform(*params.echo_delay_s, size=(n, 1))
    gain = rng.uniform(*params.echo_gain, size=(n, 1))
    return (1.0 + gain * np.exp(-2j * np.pi * freqs[None, :] * delay_s)).astype(np.complex64)


def band_response(
    n: int, freqs: np.ndarray, params: DegradeParams, rng: np.random.Generator
) -> np.ndarray:
    """Magnitude response float32 (n, F) of a cheap microphone or speaker.

    Second-order high-pass and low-pass edges at random corners, times a smooth random EQ curve
    (EQ_POINTS gains in ±eq_db, interpolated linearly over frequency).
    """
    f = np.maximum(freqs[None, :], 1.0)
    low = rng.uniform(*params.low_cut_hz, size=(n, 1))
    high = rng.uniform(*params.high_cut_hz, size=(n, 1))
    edges = 1.0 / np.sqrt(1.0 + (low / f) ** 4) / np.sqrt(1.0 + (f / high) ** 4)
    gains_db = rng.uniform(-params.eq_db, params.eq_db, size=(n, EQ_POINTS))
    pos = freqs / freqs[-1] * (EQ_POINTS - 1)  # (F,) position among the EQ points
    left = np.minimum(pos.astype(int), EQ_POINTS - 2)
    frac = pos - left
    curve_db = gains_db[:, left] * (1 - frac) + gains_db[:, left + 1] * frac
    return (edges * 10 ** (curve_db / 20)).astype(np.float32)


def draw_noise(
    batch: int, n: int, params: DegradeParams, sources: Sources, rng: np.random.Generator
) -> np.ndarray:
    """Noise float32 (batch, n): real background, babble or synthetic, per row as params say."""
    kinds = rng.choice(len(NOISE_KINDS), size=batch, p=np.asarray(params.noise_probs))
    noise = np.empty((batch, n), np.float32)
    for k, source in ((0, sources.background), (1, sources.babble)):
        rows = np.flatnonzero(kinds == k)
        if rows.size:
            noise[rows] = random_windows(source, rows.size, n, rng)
    rows = np.flatnonzero(kinds == 2)
    if rows.size:
        noise[rows] = colored_noise(rows.size, n, rng.uniform(0.0, 2.0, size=rows.size), rng)
    return noise


def random_windows(source: np.ndarray, count: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """count windows of n samples at random places of a long recording, float32 (count, n).

    A recording shorter than n is tiled, so any length can be cut.
    """
    if len(source) <= n:
        source = np.tile(source, n // max(len(source), 1) + 2)
    starts = rng.integers(0, len(source) - n, size=count)
    return source[starts[:, None] + np.arange(n)[None, :]].astype(np.float32)


def colored_noise(count: int, n: int, exponent: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise with power ∝ 1 / f**exponent (0 white, 1 pink, 2 brown), float32 (count, n), unit RMS.

    exponent float (count,): one colour per row.
    """
    white = np.fft.rfft(rng.standard_normal((count, n)), axis=1)
    f = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    shaped = np.fft.irfft(white * f[None, :] ** (-np.asarray(exponent)[:, None] / 2), n, axis=1)
    rms = np.sqrt(np.mean(shaped**2, axis=1, keepdims=True))
    return (shaped / np.maximum(rms, 1e-9)).astype(np.float32)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: np.ndarray) -> np.ndarray:
    """signal + noise scaled so that 10·log10(P_signal / P_noise) == snr_db per row.

    signal, noise float32 (B, n); snr_db (B,). A silent noise row leaves the signal alone; a
    silent signal row gets the noise at unit RMS (there is no level to be relative to).
    """
    p_signal = np.mean(signal.astype(np.float64) ** 2, axis=1)
    p_noise = np.mean(noise.astype(np.float64) ** 2, axis=1)
    p_signal = np.where(p_signal > 1e-12, p_signal, 1.0)
    scale = np.sqrt(p_signal / np.maximum(p_noise, 1e-12) / 10 ** (np.asarray(snr_db) / 10))
    scale = np.where(p_noise > 1e-12, scale, 0.0)
    return (signal + noise * scale[:, None].astype(np.float32)).astype(np.float32)


def at_tempo(audio: np.ndarray, tempo: float) -> np.ndarray:
    """audio float32 (n,) at 8 kHz played at tempo (1.05: 5 % faster) with its pitch kept, as a
    broadcast's or a DJ's time-stretch does: sox's WSOLA `tempo -m` effect (music mode); float32
    (≈ n / tempo,). tempo 1 returns audio itself."""
    if tempo == 1.0:
        return audio
    raw = ["-t", "f32", "-r", str(SAMPLE_RATE), "-c", "1"]
    cmd = ["sox", "-q", *raw, "-", *raw, "-", "tempo", "-m", f"{tempo:g}"]
    try:
        done = subprocess.run(cmd, input=np.ascontiguousarray(audio, "<f4").tobytes(),
                              capture_output=True, check=True)  # fmt: skip
    except (OSError, subprocess.CalledProcessError) as e:
        raise RuntimeError(f"sox could not change the tempo (apt install sox): {e}") from e
    return np.frombuffer(done.stdout, "<f4").astype(np.float32)
