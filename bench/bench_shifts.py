"""Accuracy and latency of `Recognizer.identify` by the sub-hop shifts it tries per query.

The library is the first --tracks Wesnoth tracks; queries are random excerpts of them with white
noise at 0–10 dB SNR, and as many excerpts of the remaining Wesnoth tracks (music not in the
library) count false matches. For each set of shifts and query length: right track among
confident answers (song), right track and start within 0.25 s (exact), false matches, and the
time of `identify` itself (fingerprints, search, alignment; decoding excluded).
Usage: python bench/bench_shifts.py [--queries 100] [--tracks 30] [--lengths 2,5]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import WESNOTH_MUSIC, build_library, percentiles_ms, report

from engine.api import (
    SAMPLE_RATE,
    Fingerprinter,
    Recognizer,
    apply_thread_policy,
    default_checkpoint_path,
    identify,
    load_audio,
    load_checkpoint,
)
from engine.model.scoring import QUERY_SHIFTS_S  # the shifts this benchmark weighs

SHIFT_SETS = {"5 shifts": QUERY_SHIFTS_S, "2 shifts": (0.0, 0.25), "1 shift": (0.0,)}
EXACT_S = 0.25
MIN_TRACK_S = 30.0  # music, not the jingles (as the corpus builder does)


def noisy_excerpt(audio: np.ndarray, seconds: float, rng) -> tuple[np.ndarray, float]:
    """A random excerpt float32 (seconds * SAMPLE_RATE,) with white noise at 0–10 dB SNR, and
    where it starts in the track."""
    n = int(seconds * SAMPLE_RATE)
    start = int(rng.integers(SAMPLE_RATE, len(audio) - n - SAMPLE_RATE))
    clean = audio[start : start + n]
    rms = np.sqrt(np.mean(clean**2)) + 1e-6
    noise = rng.standard_normal(n) * rms / 10 ** (rng.uniform(0, 10) / 20)
    return (clean + noise).astype(np.float32), start / SAMPLE_RATE


def measure(recognizer: Recognizer, queries: list, strangers: list) -> dict:
    song = exact = 0
    times = []
    for audio, path, start_s in queries:
        started = time.perf_counter()
        match = identify(recognizer, audio)
        times.append(time.perf_counter() - started)
        if match is not None and Path(match.track.path).name == path.name:
            song += 1
            exact += abs(match.offset_s - start_s) <= EXACT_S
    false = sum(identify(recognizer, audio) is not None for audio in strangers)
    return {"song": round(song / len(queries), 3), "exact": round(exact / len(queries), 3),
            "false_match": round(false / len(strangers), 3), **percentiles_ms(times)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--tracks", type=int, default=30)
    parser.add_argument("--lengths", default="2,5")
    args = parser.parse_args()
    apply_thread_policy()
    rng = np.random.default_rng(11)
    audio = {t: load_audio(t) for t in sorted(WESNOTH_MUSIC.glob("*.ogg"))}
    tracks = [t for t, a in audio.items() if len(a) >= MIN_TRACK_S * SAMPLE_RATE]
    owned, others = tracks[: args.tracks], tracks[args.tracks :]
    checkpoint = load_checkpoint(default_checkpoint_path())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        library = build_library(Path(tmp) / "db", owned, Fingerprinter(checkpoint))
        for seconds in (float(s) for s in args.lengths.split(",")):
            picks = [owned[i] for i in rng.integers(len(owned), size=args.queries)]
            queries = []
            for track in picks:
                excerpt, start_s = noisy_excerpt(audio[track], seconds, rng)
                queries.append((excerpt, track, start_s))
            strangers = [noisy_excerpt(audio[others[i]], seconds, rng)[0]
                         for i in rng.integers(len(others), size=args.queries)]  # fmt: skip
            for name, shifts in SHIFT_SETS.items():
                recognizer = Recognizer(library, checkpoint, shifts_s=shifts)
                rows.append({"query_s": seconds, "shifts": name,
                             **measure(recognizer, queries, strangers)})  # fmt: skip
                print(rows[-1], flush=True)
    facts = {"checkpoint": checkpoint.path.name, "library_tracks": len(owned),
             "queries_per_cell": args.queries, "noise": "white, 0-10 dB SNR"}  # fmt: skip
    report("shifts", rows, facts)


if __name__ == "__main__":
    main()
