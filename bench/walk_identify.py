"""The walk of one `nfp identify FILE` through the engine's modules: how many it crosses and how
often it comes back to one it had left (issue 25: a query should go down the layers and back).

Every call into and return from a function of the engine (module bodies excluded: imports are
not the walk) is traced with sys.setprofile in a fresh process; the walk is the sequence of the
modules the innermost engine frame belongs to, each change of module a step. Reported: the
modules crossed, the steps, and the re-entries (steps into a module the walk had already been
in), in all and per module. The library indexes --tracks of Debian's Wesnoth music; the query
is 5 s of the first.
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


def module_of(filename: str) -> str | None:
    """engine/query/recognize.py → engine.query.recognize; None outside the engine."""
    path = Path(filename)
    if not path.is_relative_to(ENGINE) or path.suffix != ".py":
        return None
    parts = path.relative_to(ENGINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def innermost_module(frame) -> str | None:
    """The engine module of the nearest engine function on the stack from frame up."""
    while frame is not None:
        if frame.f_code.co_name != "<module>":
            module = module_of(frame.f_code.co_filename)
            if module is not None:
                return module
        frame = frame.f_back
    return None


def trace_walk(argv: list[str]) -> list[str]:
    """The modules, in order, that `nfp ARGV` runs engine code in (repeats collapsed)."""
    from engine import cli  # imported before tracing: module bodies are not the walk

    walk: list[str] = []

    def profile(frame, event: str, arg: object) -> None:
        if event not in ("call", "return"):
            return
        here = innermost_module(frame if event == "call" else frame.f_back)
        if here is not None and (not walk or walk[-1] != here):
            walk.append(here)

    sys.setprofile(profile)
    try:
        status = cli.main(argv)
    finally:
        sys.setprofile(None)
    if status != 0:
        raise SystemExit(f"nfp {' '.join(argv)}: exit {status}")
    return walk


def describe(walk: list[str], show: bool) -> None:
    entries = collections.Counter(walk)
    reentries = {m: n - 1 for m, n in entries.items() if n > 1}
    print(f"modules crossed: {len(entries)}")
    print(f"steps: {len(walk)}")
    print(f"re-entries into a module it had left: {sum(reentries.values())}")
    for module, n in sorted(reentries.items(), key=lambda kv: -kv[1]):
        print(f"  {module}: {n}")
    if show:
        print(" → ".join(m.removeprefix("engine.") for m in walk))


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
