"""Whole processes, as a user waits for them: `nfp identify` of a 5 s file, `nfp index` of a
music folder and `nfp-desktop --self-test`, each run several times from a fresh process.

Per command: the median and smallest wall time, the median CPU time (user + system, from the
kernel's resource usage of the child, as /usr/bin/time reports it) and the peak resident memory;
for indexing also hours of audio per wall hour of the whole process. One untimed run first
writes the bytecode caches and fills the file cache, as on a user's second run. The library
indexes --tracks of Debian's Wesnoth music, or a whole --folder of music (the issue's "9.4 h of
a music folder"; its results go to process-folder.json); the query is 5 s cut from the first track.
Usage: python bench/bench_process.py [--runs 5] [--tracks 10 | --folder DIR] [--precision auto]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import real_tracks, report, write_wav

from engine.api import AUDIO_EXTENSIONS, SAMPLE_RATE, load_audio

QUERY_S = 5.0
QUERY_START_S = 30.0
SUMMARY = re.compile(r"\(([\d.]+) h of audio in")  # nfp index's summary line


def command(name: str) -> list[str]:
    """This environment's console script `name` (what a user types), else its module."""
    script = Path(sys.executable).with_name(name)
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", {"nfp": "engine.cli", "nfp-desktop": "nfp_desktop.app"}[name]]


def child_env(precision: str) -> dict[str, str]:
    """The user's environment: bytecode caches written and read, the chosen precision, Qt
    offscreen where there is no display."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["NFP_PRECISION"] = precision
    if not (env.get("DISPLAY") or env.get("WAYLAND_DISPLAY")):
        env["QT_QPA_PLATFORM"] = "offscreen"
    return env


def run_once(argv: list[str], env: dict[str, str]) -> tuple[float, float, float, str]:
    """(wall s, CPU s, peak RSS MB, stdout) of one whole process; exits if it fails."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        child = subprocess.Popen(argv, env=env, stdout=out, stderr=err)
        _, status, usage = os.wait4(child.pid, 0)  # this child's own resource usage
        wall = time.perf_counter() - started
        child.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            raise SystemExit(f"{' '.join(argv)}: exit {child.returncode}: {err.read()[-500:]!r}")
        cpu = usage.ru_utime + usage.ru_stime
        return wall, cpu, usage.ru_maxrss / 1024, out.read().decode()


def timed_runs(
    name: str, warm_up: list[str], argvs: list[list[str]], env: dict[str, str]
) -> tuple[dict, list[str]]:
    """One untimed run of `warm_up`, then one timed run of each of argvs: a row, and each
    run's stdout."""
    run_once(warm_up, env)
    runs = [run_once(argv, env) for argv in argvs]
    walls = [r[0] for r in runs]
    row = {
        "command": name,
        "runs": len(runs),
        "wall_s_median": round(statistics.median(walls), 3),
        "wall_s_min": round(min(walls), 3),
        "cpu_s_median": round(statistics.median(r[1] for r in runs), 3),
        "peak_rss_MB": round(max(r[2] for r in runs)),
    }
    return row, [r[3] for r in runs]


def write_query(track: Path, out: Path) -> Path:
    """QUERY_S of `track` from QUERY_START_S as a 16-bit mono WAV at SAMPLE_RATE."""
    audio = load_audio(track)
    start = min(int(QUERY_START_S * SAMPLE_RATE), max(0, len(audio) - int(QUERY_S * SAMPLE_RATE)))
    return write_wav(out, audio[start : start + int(QUERY_S * SAMPLE_RATE)])


def index_row(folder: Path, work: Path, runs: int, env: dict[str, str]) -> tuple[dict, Path]:
    """Index `folder` into a fresh library per run; the row and the last library."""
    dbs = [work / f"db{i}" for i in range(runs + 1)]
    argvs = [[*command("nfp"), "index", str(folder), "--db", str(db)] for db in dbs]
    name = f"nfp index ({len(audio_files(folder))} tracks)"
    row, outputs = timed_runs(name, argvs[0], argvs[1:], env)
    hours = float(SUMMARY.search(outputs[-1]).group(1))
    row["audio_h"] = hours
    row["x_real_time_whole_process"] = round(hours * 3600 / row["wall_s_median"])
    return row, dbs[-1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command")
    parser.add_argument("--tracks", type=int, default=10, help="Wesnoth tracks to index")
    parser.add_argument("--folder", type=Path, help="a music folder to index in their place")
    parser.add_argument("--precision", default="auto", help="NFP_PRECISION for every run")
    args = parser.parse_args()
    env = child_env(args.precision)
    with tempfile.TemporaryDirectory(prefix="nfp-bench-") as tmp:
        work = Path(tmp)
        folder = args.folder or copied_tracks(args.tracks, work / "music")
        index, db = index_row(folder, work, args.runs, env)
        query = write_query(audio_files(folder)[0], work / "ONE.wav")
        identify = [*command("nfp"), "identify", str(query), "--db", str(db)]
        selftest = [*command("nfp-desktop"), "--self-test"]
        rows = [
            timed_runs("nfp identify ONE.wav (5 s)", identify, [identify] * args.runs, env)[0],
            index,
            timed_runs("nfp-desktop --self-test", selftest, [selftest] * args.runs, env)[0],
        ]
    name = "process-folder" if args.folder else "process"
    report(name, rows, {"precision_requested": args.precision, "folder": str(args.folder or "")})


def copied_tracks(n: int, folder: Path) -> Path:
    """A music folder of n of Wesnoth's tracks (copies: a user's files, not the package's)."""
    folder.mkdir()
    for track in real_tracks(n):
        shutil.copy(track, folder / track.name)
    return folder


def audio_files(folder: Path) -> list[Path]:
    """The audio files under folder, sorted, as `nfp index` would find them."""
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)


if __name__ == "__main__":
    main()
