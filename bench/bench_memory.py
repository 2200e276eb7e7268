"""Peak memory of `nfp listen`, and the library's size on disk, for libraries of 10 to 1,000 hours.

Each library is made the way `nfp index` makes one: real Wesnoth tracks fingerprinted by the
shipped checkpoint, then filler files standing for an hour of music each, whose fingerprints are
random unit vectors (FillerFingerprinter). Both go through index_folders, so the store, its
compression past FLAT_MAX_VECTORS and the search index are exactly what a user gets. `nfp listen`
then runs as its own process on a PulseAudio virtual microphone while a real track plays into
it; its peak resident memory is the kernel's VmHWM, read while it runs (wait4's ru_maxrss would
count the pages the child shared with this process when it was forked).
Usage: python bench/bench_memory.py [--hours 10,1000] [--listen-s 15] [--work /tmp/nfp-bench-memory]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from common import build_library, real_tracks, report, write_wav
from virtual_mic import Player, pulseaudio_server

from engine.api import (
    SAMPLE_RATE,
    Checkpoint,
    Fingerprinter,
    Library,
    default_checkpoint_path,
    index_folders,
    load_audio,
    load_checkpoint,
    remove_library,
    run_steps,
)

SEGMENTS_PER_HOUR = 7200
PLAYING_START_S = 40.0


class FillerFingerprinter:
    """Stands in for Fingerprinter on filler files: an hour of random unit vectors per file."""

    def __init__(self, checkpoint: Checkpoint, seed: int = 0) -> None:
        self.checkpoint = checkpoint
        self.d = checkpoint.d
        self._rng = np.random.default_rng(seed)

    def audio(self, audio: np.ndarray) -> np.ndarray:
        rows = self._rng.standard_normal((SEGMENTS_PER_HOUR, self.d), dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def build_sized_library(
    db: Path, hours: float, tracks: list[Path], checkpoint: Checkpoint
) -> float:
    """Index tracks for real, then filler up to `hours`, into a new library; returns the
    seconds it took."""
    remove_library(db)
    started = time.perf_counter()
    filler = db.parent / f"filler-{hours:g}h"
    with build_library(db, tracks, Fingerprinter(checkpoint)) as library:
        n_filler = round(hours - library.db.records().committed_rows / SEGMENTS_PER_HOUR)
        filler.mkdir(exist_ok=True)
        for i in range(n_filler):
            write_wav(filler / f"filler-{i:05d}.wav", np.zeros(SAMPLE_RATE, np.float32))
        run_steps(index_folders(library, [filler], FillerFingerprinter(checkpoint)))
    return time.perf_counter() - started


def listen_peak_rss(db: Path, playing: Path, listen_s: float, server: str, tmp: Path) -> dict:
    """Run `nfp listen` while `playing` sounds into the virtual microphone; did it name it?"""
    with Library(db) as library:
        title = next(t.title for t in library.tracks() if Path(t.path).name == playing.name)
    out = tmp / "listen.out"
    with open(out, "w") as stdout:
        listen = subprocess.Popen(
            [sys.executable, "-m", "engine.cli", "listen", "--db", str(db), "--device", "pulse",
             "--seconds", str(listen_s)],
            stdout=stdout, stderr=subprocess.STDOUT, env={**os.environ, "PULSE_SERVER": server},
        )  # fmt: skip
        player = Player(load_audio(playing), PLAYING_START_S, listen_s + 30, tmp, server)
        try:
            peak_kb = 0
            while listen.poll() is None:
                peak_kb = max(peak_kb, _high_water_kb(listen.pid))
                time.sleep(0.1)
        finally:
            player.stop()
    text = out.read_text()
    if listen.returncode != 0:
        raise SystemExit(f"nfp listen failed:\n{text}")
    matched = any(f"] {title} " in line for line in text.splitlines())
    return {"listen_peak_rss_MB": round(peak_kb / 1024, 1), "matched": matched}


def _high_water_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM) so far; 0 once it has gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next(
        (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM")), 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", default="10,1000")
    parser.add_argument("--tracks", type=int, default=10, help="real tracks in each library")
    parser.add_argument("--listen-s", type=float, default=15.0)
    parser.add_argument("--work", type=Path, default=Path("/tmp/nfp-bench-memory"))
    args = parser.parse_args()
    checkpoint = load_checkpoint(default_checkpoint_path())
    tracks = real_tracks(args.tracks)
    rows = []
    with pulseaudio_server(_fresh(args.work / "pulse")) as server:
        for hours in (float(h) for h in args.hours.split(",")):
            db = args.work / f"{hours:g}h" / "db"
            build_s = build_sized_library(db, hours, tracks, checkpoint)
            with Library(db) as library:
                info = library.info()
            listened = listen_peak_rss(db, tracks[0], args.listen_s, server, db.parent)
            rows.append({"hours": round(info["segments"] / SEGMENTS_PER_HOUR, 1),
                         "index_spec": info["index_spec"], "build_s": round(build_s, 1),
                         "disk_MB": round(info["bytes_on_disk"] / 1e6, 1),
                         "disk_MB_per_h": round(info["bytes_on_disk"] / 1e6 / hours, 3),
                         **listened})  # fmt: skip
    report("memory", rows, {"listen_s": args.listen_s, "playing": tracks[0].name})


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


if __name__ == "__main__":
    main()
