"""CPU cost of live listening, in % of one core: while holding a match on a library track, and
while searching (music not in the library). Audio goes through engine.query.stream.LiveMatcher in
100 ms blocks, as the microphone delivers it, as fast as the matcher takes it; CPU time per
second of audio is the share of one core that listening in real time costs.
Usage: python bench/bench_live_cpu.py [--tracks 20] [--seconds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import real_tracks, report

from engine.core.audio import SAMPLE_RATE, load_audio
from engine.core.threads import apply_thread_policy
from engine.library.library import Library
from engine.model.checkpoint import default_checkpoint_path
from engine.model.fingerprint import Fingerprinter
from engine.model.load import load_checkpoint
from engine.query.recognize import Recognizer
from engine.query.stream import LiveMatcher

BLOCK_S = 0.1
START_S = 20.0  # where in each track the played audio starts


def cpu_per_audio_s(recognizer: Recognizer, audio) -> dict:
    """Process CPU seconds per second of audio, split by whether a match was held."""
    matcher = LiveMatcher(recognizer)
    block = int(BLOCK_S * SAMPLE_RATE)
    spent = {"holding": [0.0, 0.0], "searching": [0.0, 0.0]}  # cpu_s, audio_s
    for i in range(0, len(audio) - block + 1, block):
        started = time.process_time()
        state = matcher.push(audio[i : i + block], SAMPLE_RATE)
        phase = spent["holding" if state.match is not None else "searching"]
        phase[0] += time.process_time() - started
        phase[1] += BLOCK_S
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=20, help="library tracks (Wesnoth)")
    parser.add_argument("--seconds", type=float, default=60.0, help="audio played per case")
    args = parser.parse_args()
    policy = apply_thread_policy()
    tracks = real_tracks(args.tracks + 1)
    library_tracks, stranger = tracks[:-1], tracks[-1]
    checkpoint = load_checkpoint(default_checkpoint_path())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        music = Path(tmp) / "music"
        music.mkdir()
        for t in library_tracks:
            (music / t.name).symlink_to(t)
        library = Library(Path(tmp) / "db")
        for _ in library.update(music, Fingerprinter(checkpoint)):
            pass
        recognizer = Recognizer(library, checkpoint)
        n = int(args.seconds * SAMPLE_RATE)
        start = int(START_S * SAMPLE_RATE)
        for case, path in (("library track", library_tracks[0]), ("not in the library", stranger)):
            spent = cpu_per_audio_s(recognizer, load_audio(path)[start : start + n])
            for phase, (cpu_s, audio_s) in spent.items():
                if audio_s:
                    rows.append({"music": case, "phase": phase, "audio_s": round(audio_s, 1),
                                 "core_pct": round(100 * cpu_s / audio_s, 1)})  # fmt: skip
    report("live_cpu", rows, {"checkpoint": checkpoint.path.name, "threads": policy,
                              "library_tracks": len(library_tracks)})  # fmt: skip


if __name__ == "__main__":
    main()
