"""Cut a 5 s excerpt at a random offset from a random track of a folder and add noise at 10 dB SNR.

Usage: python scripts/make_excerpt.py FOLDER OUT.wav  (prints the truth, for the demo)
"""

import sys
import wave
from pathlib import Path

import numpy as np

from engine.core.audio import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio


def main(folder: str, out: str) -> None:
    rng = np.random.default_rng()
    tracks = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    track = tracks[rng.integers(len(tracks))]
    audio = load_audio(track)
    start = int(rng.uniform(0, max(0.0, len(audio) / SAMPLE_RATE - 5)) * SAMPLE_RATE)
    clip = audio[start : start + 5 * SAMPLE_RATE]
    clip = clip + rng.standard_normal(len(clip)).astype(np.float32) * np.sqrt(np.mean(clip**2) / 10)
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes((np.clip(clip, -1, 1) * 32767).astype(np.int16).tobytes())
    print(f"excerpt: {track.name} from {start / SAMPLE_RATE:.2f} s, white noise at 10 dB SNR")


if __name__ == "__main__":
    main(*sys.argv[1:3])
