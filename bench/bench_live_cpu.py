"""CPU cost of live listening, in % of one core: while holding a match on a library track, and
while searching (music not in the library). Audio goes through the engine's live matcher
(engine.api.listen) in 100 ms blocks, as the microphone delivers it, as fast as the matcher
takes it; CPU time per second of audio is the share of one core that listening in real time
costs.
Usage: python bench/bench_live_cpu.py [--tracks 20] [--seconds 60]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from common import build_library, real_tracks, report

from engine.api import (
    SAMPLE_RATE,
    Fingerprinter,
    Recognizer,
    apply_thread_policy,
    default_checkpoint_path,
    listen,
    load_audio,
    load_checkpoint,
)

BLOCK_S = 0.1
START_S = 20.0  # where in each track the played audio starts


def cpu_per_audio_s(recognizer: Recognizer, audio) -> dict:
    """Process CPU seconds per second of audio, split by whether a match was held."""
    block = int(BLOCK_S * SAMPLE_RATE)
    blocks = ((audio[i : i + block], SAMPLE_RATE) for i in range(0, len(audio) - block + 1, block))
    states = listen(recognizer, blocks)
    spent = {"holding": [0.0, 0.0], "searching": [0.0, 0.0]}  # cpu_s, audio_s
    while True:
        started = time.process_time()
        state = next(states, None)
        if state is None:
            return spent
        phase = spent["holding" if state.match is not None else "searching"]
        phase[0] += time.process_time() - started
        phase[1] += BLOCK_S


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
        library = build_library(Path(tmp) / "db", library_tracks, Fingerprinter(checkpoint))
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
