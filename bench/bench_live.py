"""Live latency: seconds of degraded audio from the start of playback to a confident, correct match.

Plays excerpts through the engine's live matcher (engine.api.listen) in 100 ms blocks, as a
microphone would deliver them, degraded at the evaluation harness's "mid" level (noise, room,
echo, device band-limit) with the evaluation half of the degradation bank. The library is the
corpus's test split (`nfp train corpus`); as many excerpts of its val split, music not in the
library, count how often listening names a track for music the user does not own (a false
match).
Usage: python bench/bench_live.py [--trials 40] [--level mid]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from common import build_library, report

from engine.api import (
    SAMPLE_RATE,
    Fingerprinter,
    LiveState,
    Recognizer,
    apply_thread_policy,
    default_checkpoint_path,
    listen,
    load_audio,
    load_checkpoint,
)
from training.degrade import LEVELS, Sources, degrade

PLAY_S = 12.0
BLOCK_S = 0.1
CORPUS = Path("corpus")


def corpus_tracks(split: str, n: int | None = None) -> list[Path]:
    manifest = CORPUS / "manifest.json"
    if not manifest.is_file():
        raise SystemExit(f"{manifest}: build the corpus first (nfp train corpus)")
    tracks = [Path(t["source"]) for t in json.loads(manifest.read_text())["tracks"]
              if t["split"] == split]  # fmt: skip
    return tracks[:n]


def played(recognizer, audio) -> Iterator[LiveState]:
    """The live states of listening to audio in BLOCK_S blocks."""
    block = int(BLOCK_S * SAMPLE_RATE)
    blocks = ((audio[i : i + block], SAMPLE_RATE) for i in range(0, len(audio), block))
    return listen(recognizer, blocks)


def first_correct_s(recognizer, audio, track_path: str, start_s: float) -> float | None:
    for state in played(recognizer, audio):
        m = state.match
        if m and m.track.path == track_path and abs(m.offset_s - (start_s + state.heard_s)) < 1.0:
            return state.heard_s
    return None


def names_a_track(recognizer, audio) -> bool:
    return any(state.match is not None for state in played(recognizer, audio))


def played_excerpt(track: Path, level: str, sources: Sources, rng) -> tuple[np.ndarray, float]:
    """PLAY_S of a random place of the track, degraded (with 0.5 s of context for the reverb
    tail); returns the audio and where it starts in the track, seconds."""
    audio = load_audio(track)
    start = int(rng.uniform(1, len(audio) / SAMPLE_RATE - PLAY_S - 1) * SAMPLE_RATE)
    context = audio[start - SAMPLE_RATE // 2 : start + int(PLAY_S * SAMPLE_RATE)]
    played = degrade(context[None], int(PLAY_S * SAMPLE_RATE), LEVELS[level], sources, rng)[0]
    return played, start / SAMPLE_RATE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--tracks", type=int, default=30)
    parser.add_argument("--level", default="mid", choices=sorted(LEVELS))
    parser.add_argument("--bank", default=str(CORPUS / "degradations.npz"))
    args = parser.parse_args()
    apply_thread_policy()
    rng = np.random.default_rng(7)
    checkpoint = load_checkpoint(default_checkpoint_path())
    tracks = corpus_tracks("test", args.tracks)
    with tempfile.TemporaryDirectory() as tmp:
        library = build_library(Path(tmp) / "db", tracks, Fingerprinter(checkpoint))
        recognizer = Recognizer(library, checkpoint)
        by_name = {Path(t.path).name: t.path for t in recognizer.tracks}
        sources = Sources.load(args.bank, "eval")
        latencies = []
        for _ in range(args.trials):
            track = tracks[int(rng.integers(len(tracks)))]
            played, start_s = played_excerpt(track, args.level, sources, rng)
            latencies.append(first_correct_s(recognizer, played, by_name[track.name], start_s))
        strangers = [s for s in corpus_tracks("val") if s.name not in by_name]
        false_matches = [
            names_a_track(recognizer, played_excerpt(s, args.level, sources, rng)[0])
            for s in (strangers[int(rng.integers(len(strangers)))] for _ in range(args.trials))
        ]
    found = np.array([x for x in latencies if x is not None])
    rows = [{"level": args.level, "trials": args.trials,
             "median_s": float(np.median(found)) if found.size else float("nan"),
             "p90_s": float(np.percentile(found, 90)) if found.size else float("nan"),
             **{f"by_{s}s": round(float(np.mean([x is not None and x <= s for x in latencies])), 3)
                for s in (2, 3, 5, 10)},
             "false_match": round(float(np.mean(false_matches)), 3)}]  # fmt: skip
    report("live", rows, {"checkpoint": checkpoint.path.name, "play_s": PLAY_S})


if __name__ == "__main__":
    main()
