"""Writing test audio in every format the library reads, with the encoders inside PyAV's wheel."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np

from engine.core.audio import SAMPLE_RATE

# suffix → (container format, codec, codec options)
FORMATS = {
    ".wav": ("wav", "pcm_s16le", {}),
    ".flac": ("flac", "flac", {}),
    ".mp3": ("mp3", "libmp3lame", {}),
    ".ogg": ("ogg", "vorbis", {"strict": "experimental"}),
    ".opus": ("ogg", "libopus", {}),
    ".m4a": ("mp4", "aac", {}),
}


def write_audio(path: Path, audio: np.ndarray, rate: int, *, tags: dict | None = None) -> Path:
    """Encode float32 audio (n,) mono or (n, 2) stereo at `rate` into path, by its suffix."""
    container_format, codec, options = FORMATS[path.suffix]
    audio = np.asarray(audio, np.float32)
    if audio.ndim == 1:
        audio = np.stack([audio, audio], axis=1)  # stereo exercises the downmix
    out_rate = 48000 if codec == "libopus" else rate
    with av.open(str(path), "w", format=container_format) as container:
        for key, value in (tags or {}).items():
            container.metadata[key] = value
        stream = container.add_stream(codec, rate=out_rate, options=options)
        stream.layout = "stereo"
        resampler = av.AudioResampler(format=stream.format.name, layout="stereo", rate=out_rate)
        block = 4096
        for start in range(0, len(audio), block):
            chunk = np.ascontiguousarray(audio[start : start + block].reshape(1, -1))
            frame = av.AudioFrame.from_ndarray(chunk, format="flt", layout="stereo")
            frame.sample_rate = rate
            for out in resampler.resample(frame):
                container.mux(stream.encode(out))
        for out in resampler.resample(None):
            container.mux(stream.encode(out))
        container.mux(stream.encode(None))
    return path


def music_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A deterministic melody: a new chord of three partials every 250 ms, float32 (n,)."""
    rng = np.random.default_rng(seed)
    n_notes = int(np.ceil(seconds * 4))
    note_len = rate // 4
    t = np.arange(note_len) / rate
    envelope = np.minimum(1.0, np.linspace(0, 8, note_len)) * np.exp(-3 * t)
    notes = []
    for _ in range(n_notes):
        freqs = 110 * 2 ** (rng.integers(0, 48, size=3) / 12)
        notes.append(sum(np.sin(2 * np.pi * f * t) for f in freqs) * envelope / 3)
    audio = np.concatenate(notes)[: int(seconds * rate)]
    return (0.5 * audio + 0.01 * rng.standard_normal(len(audio))).astype(np.float32)


def music_folder(folder: Path, count: int, seconds: float, first_seed: int) -> Path:
    """A folder of `count` generated tracks t0.wav, t1.wav, … at SAMPLE_RATE (seeds from
    first_seed on)."""
    folder.mkdir()
    for i in range(count):
        write_audio(folder / f"t{i}.wav", music_like(seconds, SAMPLE_RATE, first_seed + i),
                    SAMPLE_RATE)  # fmt: skip
    return folder
