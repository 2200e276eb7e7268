"""Live latency: seconds of degraded audio from the start of playback to a confident, correct match.

Plays excerpts through engine.stream.LiveMatcher in 100 ms blocks, as a microphone would deliver
them, degraded at the evaluation harness's "mid" level (noise, room, echo, device band-limit)
with the evaluation half of the degradation bank. Tracks are the corpus's test split when the
corpus exists (`nfp train corpus`), else Wesnoth's music.
Usage: python bench/bench_live.py [--trials 40] [--level mid]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import real_tracks, report

from engine.audio import SAMPLE_RATE, load_audio
from engine.checkpoint import default_checkpoint_path, load_checkpoint
from engine.fingerprint import Fingerprinter
from engine.library import Library
from engine.recognize import Recognizer
from engine.stream import LiveMatcher
from training.degrade import LEVELS, Sources, degrade

PLAY_S = 12.0
BLOCK_S = 0.1
CORPUS = Path("corpus")


def test_tracks(n: int) -> list[Path]:
    manifest = CORPUS / "manifest.json"
    if manifest.is_file():
        tracks = [Path(t["source"]) for t in json.loads(manifest.read_text())["tracks"]
                  if t["split"] == "test"]  # fmt: skip
        return tracks[:n]
    return real_tracks(n)


def first_correct_s(recognizer, audio, track_path: str, start_s: float) -> float | None:
    matcher = LiveMatcher(recognizer)
    block = int(BLOCK_S * SAMPLE_RATE)
    for i in range(0, len(audio), block):
        state = matcher.push(audio[i : i + block], SAMPLE_RATE)
        m = state.match
        if m and m.track.path == track_path and abs(m.offset_s - (start_s + state.heard_s)) < 1.0:
            return state.heard_s
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--tracks", type=int, default=30)
    parser.add_argument("--level", default="mid", choices=sorted(LEVELS))
    parser.add_argument("--bank", default=str(CORPUS / "degradations.npz"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    rng = np.random.default_rng(7)
    checkpoint = load_checkpoint(default_checkpoint_path())
    tracks = test_tracks(args.tracks)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "music").mkdir()
        for t in tracks:
            (Path(tmp) / "music" / t.name).symlink_to(t.resolve())
        library = Library(Path(tmp) / "db")
        for _ in library.update(Path(tmp) / "music", Fingerprinter(checkpoint)):
            pass
        recognizer = Recognizer(library, checkpoint)
        by_name = {Path(t.path).name: t.path for t in recognizer.tracks}
        sources = Sources.load(args.bank, "eval")
        latencies = []
        for _ in range(args.trials):
            track = tracks[int(rng.integers(len(tracks)))]
            audio = load_audio(track)
            start = int(rng.uniform(1, len(audio) / SAMPLE_RATE - PLAY_S - 1) * SAMPLE_RATE)
            context = audio[start - SAMPLE_RATE // 2 : start + int(PLAY_S * SAMPLE_RATE)]
            played = degrade(
                context[None], int(PLAY_S * SAMPLE_RATE), LEVELS[args.level], sources, rng
            )[0]
            latencies.append(
                first_correct_s(recognizer, played, by_name[track.name], start / SAMPLE_RATE)
            )
    found = np.array([x for x in latencies if x is not None])
    rows = [{"level": args.level, "trials": args.trials,
             "median_s": float(np.median(found)) if found.size else float("nan"),
             "p90_s": float(np.percentile(found, 90)) if found.size else float("nan"),
             **{f"by_{s}s": round(float(np.mean([x is not None and x <= s for x in latencies])), 3)
                for s in (2, 3, 5, 10)}}]  # fmt: skip
    report("live", rows, {"checkpoint": checkpoint.path.name, "play_s": PLAY_S})


if __name__ == "__main__":
    main()
