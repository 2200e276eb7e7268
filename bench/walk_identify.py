"""The walk of one `nfp identify FILE` through the engine's modules: how many it crosses and how
often it comes back to one it had left (issue 25: a query should go down the layers and back).

Every call of an engine function (module bodies excluded: imports are not the walk) is traced
with sys.setprofile in a fresh process. A step enters a module that has no function running:
the first step into a module is new ground, a later one re-enters a module the walk had left
(a return to a caller that is still running is no step). Reported: the modules crossed, the
steps, the re-entries in all and per module, and who re-entered them most. The library indexes
--tracks of Debian's Wesnoth music; the query is 5 s of the first.
Usage: python bench/walk_identify.py [--tracks 2] [--show]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common import real_tracks, write_wav

ENGINE = Path(__file__).resolve().parent.parent / "engine"
QUERY_S = 5.0
QUERY_START_S = 30.0
MOST = 10  # callers listed


def module_of(filename: str) -> str | None:
    """engine/query/recognize.py → engine.query.recognize; None outside the engine."""
    path = Path(filename)
    if not path.is_relative_to(ENGINE) or path.suffix != ".py":
        return None
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


class Walk:
    """The steps of a traced run: (module entered, the engine function that called into it)."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str]] = []
        self._running: collections.Counter[str] = collections.Counter()

    def profile(self, frame, event: str, arg: object) -> None:
        if event not in ("call", "return") or frame.f_code.co_name == "<module>":
            return
        module = module_of(frame.f_code.co_filename)
        if module is None:
            return
        if event == "return":
            self._running[module] -= 1
            return
        if not self._running[module]:
            self.steps.append((module, f"{_caller(frame)} → {frame.f_code.co_name}"))
        self._running[module] += 1


def _caller(frame) -> str:
    """The engine function that called frame's, perhaps through other code."""
    frame = frame.f_back
    while frame is not None and module_of(frame.f_code.co_filename) is None:
        frame = frame.f_back
    if frame is None:
        return "?"
    return f"{module_of(frame.f_code.co_filename)}.{frame.f_code.co_name}"


def trace_walk(argv: list[str]) -> Walk:
    """The walk of `nfp ARGV` in this process."""
    from engine import cli  # imported before tracing: module bodies are not the walk

    walk = Walk()
    sys.setprofile(walk.profile)
    try:
        status = cli.main(argv)
    finally:
        sys.setprofile(None)
    if status != 0:
        raise SystemExit(f"nfp {' '.join(argv)}: exit {status}")
    return walk


def describe(walk: Walk, show: bool) -> None:
    seen: set[str] = set()
    reentries: collections.Counter[str] = collections.Counter()
    by: collections.Counter[str] = collections.Counter()
    for module, call in walk.steps:
        if module in seen:
            reentries[module] += 1
            by[call] += 1
        seen.add(module)
    print(f"modules crossed: {len(seen)}")
    print(f"steps: {len(walk.steps)}")
    print(f"re-entries into a module it had left: {sum(reentries.values())}")
    for module, n in reentries.most_common():
        print(f"  {module}: {n}")
    print("most re-entering calls:")
    for call, n in by.most_common(MOST):
        print(f"  {n} × {call}")
    if show:
        print(" → ".join(m.removeprefix("engine.") for m, _ in walk.steps))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=2, help="Wesnoth tracks to index")
    parser.add_argument("--show", action="store_true", help="print the walk itself")
    parser.add_argument("--walk", nargs=2, metavar=("DB", "QUERY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.walk:  # the traced process: a fresh one, as a user's `nfp identify` is
        db, query = args.walk
        describe(trace_walk(["identify", query, "--db", db]), args.show)
        return
    from engine.api import SAMPLE_RATE, load_audio

    with tempfile.TemporaryDirectory(prefix="nfp-walk-") as tmp:
        music, db = Path(tmp) / "music", Path(tmp) / "db"
        music.mkdir()
        tracks = real_tracks(args.tracks)
        for track in tracks:
            shutil.copy(track, music / track.name)
        nfp = [sys.executable, "-m", "engine.cli"]
        subprocess.run([*nfp, "index", str(music), "--db", str(db)], check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        start = int(QUERY_START_S * SAMPLE_RATE)
        audio = load_audio(tracks[0])[start : start + int(QUERY_S * SAMPLE_RATE)]
        query = write_wav(Path(tmp) / "query.wav", audio)
        show = ["--show"] if args.show else []
        subprocess.run([sys.executable, __file__, "--walk", str(db), str(query), *show],
                       check=True)  # fmt: skip


if __name__ == "__main__":
    main()
