"""nfp: identify music from your own library (index a folder, identify files, listen live).

The command of docs/architecture.md (The command line). User errors become one message and exit
status 1."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Generator, Sequence
from pathlib import Path

from engine.api import (
    Checkpoint,
    EmptyLibraryError,
    Fingerprinter,
    FingerprintSource,
    IndexProgress,
    IndexSummary,
    Library,
    LiveState,
    NfpError,
    Recognizer,
    Steps,
    Track,
    apply_thread_policy,
    check_checkpoint,
    checkpoint_for_index,
    default_db_dir,
    display_path,
    fingerprint_source,
    identify,
    index_folders,
    input_devices,
    library_exists,
    library_info,
    listen,
    load_audio,
    music_folder,
    open_recognizer,
    printable,
    read_catalogue,
    rebuild_library,
    record_blocks,
    remove_folder,
    resolve_device,
    run_steps,
    superseded_folders,
    tracklist,
)


def build_parser(running: str | None = None) -> argparse.ArgumentParser:
    """The parser of every built-in command, and of the plugin command `running` names (the
    other plugins stand in by name, unloaded: engine.plugins)."""
    parser = argparse.ArgumentParser(prog="nfp", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, *, shards: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        if not shards:
            p.add_argument(
                "--db", type=Path, default=None, help="library directory (default: per-user)"
            )
            return p
        p.add_argument("--db", type=Path, action="append", help="library directory (default: "
                       "per-user); several are searched as one catalogue")  # fmt: skip
        p.add_argument("--catalogue", type=Path, metavar="FILE", help="a file listing library "
                       "directories, one per line, searched as one")  # fmt: skip
        p.add_argument("--scheduler", metavar="ADDRESS",
                       help="hold each library on a worker of the Dask cluster at ADDRESS "
                            "(tcp://HOST:8786; nfp[cluster])")  # fmt: skip
        return p

    p = command("index", cmd_index, "index or update a music folder")
    p.add_argument("folder", type=Path)
    p.add_argument("--checkpoint", type=Path, help="encoder checkpoint (default: the shipped one)")
    p.add_argument("--rebuild", action="store_true", help="drop the existing index and start over")
    where = p.add_mutually_exclusive_group()
    where.add_argument(
        "--workers",
        type=_positive,
        metavar="N",
        help="fingerprint in N worker processes (Dask; pip install 'nfp[cluster]')",
    )
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="fingerprint on the Dask cluster at ADDRESS (tcp://HOST:8786), whose "
                            "workers read the same paths")  # fmt: skip
    p = command("identify", cmd_identify, "identify audio files against the library", shards=True)
    p.add_argument("files", type=Path, nargs="+")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--checkpoint", type=Path, help=argparse.SUPPRESS)
    p = command(
        "tracklist", cmd_tracklist, "list which tracks play when in a long recording", shards=True
    )
    p.add_argument("file", type=Path)
    p.add_argument("--json", action="store_true")
    p = command(
        "listen",
        cmd_listen,
        "identify what the microphone (or a monitor source) hears",
        shards=True,
    )
    p.add_argument("--device", help="input device name or part of it (default: system default)")
    p.add_argument("--seconds", type=float, default=None, help="stop after this long")
    p.add_argument("--list-devices", action="store_true", help="list input devices and exit")
    p = command("remove", cmd_remove, "remove a music folder: its tracks leave the library")
    p.add_argument("folder", type=Path)
    p = command("info", cmd_info, "show what is in a library")
    p.add_argument("--json", action="store_true")
    p = sub.add_parser(
        "export", help="export .pt checkpoints to ONNX for inference without torch (needs torch)"
    )
    p.add_argument("checkpoints", type=Path, nargs="+")
    p.add_argument("--out", type=Path, help="output file (one checkpoint; default: beside it)")
    p.add_argument("--int8", type=Path, metavar="MUSIC_FOLDER",
                   help="also write an int8 twin beside each export (NAME.int8.onnx), calibrated "
                        "on music in this folder; it runs where the probe passes")  # fmt: skip
    p.set_defaults(func=cmd_export)
    if running not in sub.choices:  # no built-in command runs: a plugin's might
        from engine.plugins import add_plugin_commands  # reading entry points: 15 ms

        add_plugin_commands(sub, running)
    return parser


def command_name(argv: Sequence[str]) -> str | None:
    """The subcommand that argv names: its first word that is not an option (nfp's own
    options, -v and -h, take no value), or None."""
    return next((word for word in argv if not word.startswith("-")), None)


def _positive(text: str) -> int:
    """A number of local worker processes: each takes a core, so more than there are only fight
    (--workers 1000 would start a thousand processes)."""
    most = os.cpu_count() or 1
    if not text.isdecimal() or not 1 <= int(text) <= most:
        raise argparse.ArgumentTypeError(
            f"expected a number of workers from 1 to {most} (this machine's cores), not {text!r}"
        )
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # At exit the interpreter's collector walks everything the imports made (numpy, faiss, ONNX
    # Runtime, PyAV) in search of cycles: 0.06 s of CPU of each `nfp identify` on the 2-core AMD
    # EPYC. By then each file nfp wrote is closed and synced, so what is left is frozen out of
    # its sight instead; a cycle then ends with the process, as after kill -9, which the
    # library's files survive by design (docs/reliability.md). Registered once per process.
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)
    args = build_parser(command_name(argv)).parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(PrintableFormatter("%(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        handlers=[handler])  # fmt: skip
    try:
        apply_thread_policy()  # reads NFP_THREADS: its refusal is one line like any other
        status = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit, so that a reader gone away is handled below
        return status
    except NfpError as e:
        print_error(e)
        return 1
    except BrokenPipeError:
        # The reader left (`nfp identify … | head -1`). As the signal module docs advise: point
        # stdout at devnull so the interpreter's final flush cannot fail again, and exit 1.
        with contextlib.suppress(AttributeError, OSError, ValueError):  # stdout has no fd
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as e:  # a file or folder the command needed (--db under a file, no access)
        where = f"{e.filename}: " if e.filename is not None else ""
        print_error(f"{where}{e.strerror or e}")
        return 1
    except KeyboardInterrupt:
        print("nfp: interrupted", file=sys.stderr)
        return 130


class PrintableFormatter(logging.Formatter):
    """Log messages (warnings name files) made printable; a traceback under -v stays as is."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return printable(super().formatMessage(record))


# ---- helpers ---------------------------------------------------------------------------------
def _db_dir(args: argparse.Namespace) -> Path:
    return (args.db or default_db_dir()).expanduser()


def _recognizer(args: argparse.Namespace) -> Recognizer:
    """The recognizer over the library, or over the catalogue of --db … / --catalogue."""
    checkpoint = getattr(args, "checkpoint", None)
    return open_recognizer(_shard_dirs(args), checkpoint=checkpoint, scheduler=args.scheduler)


def _shard_dirs(args: argparse.Namespace) -> list[Path]:
    if args.catalogue and args.db:
        raise NfpError("give the libraries with --db or with --catalogue, not both")
    if args.catalogue:
        return read_catalogue(args.catalogue)
    return args.db or [default_db_dir()]


def print_error(error: object) -> None:
    """The one line a failure prints on stderr; names from files and tags made printable."""
    print(f"nfp: error: {printable(error)}", file=sys.stderr)


def track_name(track: Track) -> str:
    """The track as identify, tracklist and listen all show it, printable: "Artist – Title",
    or the title alone."""
    name = f"{track.artist} – {track.title}" if track.artist else track.title
    return printable(name)


def _format_time(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


# ---- commands --------------------------------------------------------------------------------
def cmd_index(args: argparse.Namespace) -> int:
    db = _db_dir(args)
    # The folder and the checkpoint are checked before anything is made in --db: a refusal
    # leaves no empty library behind.
    folder = music_folder(args.folder)
    checkpoint = checkpoint_for_index(db, args.checkpoint)
    library = None if args.rebuild else Library(db)
    earlier = None if library is None else superseded_folders(library, checkpoint)
    if library is None or earlier:  # an upgrade of the shipped model is made again, not refused
        folders = list(dict.fromkeys([*(earlier or ()), str(folder)]))
        if earlier:
            print(f"{db}: made by an earlier {checkpoint.path.name}; fingerprinting "
                  f"{', '.join(folders)} again with its new weights", file=sys.stderr)  # fmt: skip
        with _fingerprint_source(args, checkpoint) as source:
            summary = _run_with_progress(rebuild_library(db, folders, source))
    else:
        check_checkpoint(library, checkpoint)
        with _fingerprint_source(args, checkpoint) as source:
            summary = _run_with_progress(index_folders(library, [args.folder], source))
    _print_summary(summary)
    return 0


def _fingerprint_source(
    args: argparse.Namespace, checkpoint: Checkpoint
) -> contextlib.AbstractContextManager[Fingerprinter | FingerprintSource]:
    """This process's Fingerprinter, or Dask workers with --workers / --scheduler (started
    only after the library and checkpoint checks passed, and closed when indexing ends)."""
    return fingerprint_source(checkpoint, workers=args.workers, scheduler=args.scheduler)


def _run_with_progress(run: Generator[IndexProgress, None, IndexSummary]) -> IndexSummary:
    """Drive an indexing generator with a progress bar, shown from the first file on (a run
    that fails before it, or has nothing to do, prints no bar)."""
    from tqdm import tqdm  # here: 50 ms of imports that only indexing needs

    steps, bar = Steps(run), None
    try:
        for step in steps:
            if bar is None:
                bar = tqdm(desc="indexing", unit="file", total=step.total, dynamic_ncols=True,
                           file=sys.stderr)  # fmt: skip
            bar.set_postfix_str(printable(Path(step.path).name)[:40], refresh=False)
            bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return steps.result


def _print_summary(summary: IndexSummary) -> None:
    speed = summary.audio_s / summary.elapsed_s if summary.elapsed_s else 0.0
    print(
        f"indexed {summary.indexed}, unchanged {summary.unchanged}, moved {summary.moved}, "
        f"skipped {len(summary.skipped)}, removed {summary.removed} "
        f"({summary.audio_s / 3600:.2f} h of audio in {summary.elapsed_s:.1f} s, "
        f"{speed:.0f}× real time)"
    )
    if summary.repaired:
        print(f"  repaired {summary.repaired} tracks whose stored fingerprints were damaged")
    if summary.refreshed:
        print(f"  fingerprinted {summary.refreshed} tracks again: their silent passages are now "
              "left out, so a room with no music in it does not match them")  # fmt: skip
    for note in summary.notes:
        print(f"  {printable(note)}")
    for path, reason in summary.skipped:
        print(printable(f"  skipped {path}: {reason}"))


def cmd_identify(args: argparse.Namespace) -> int:
    recognizer = _recognizer(args)
    failed = 0
    for path in args.files:
        started = time.perf_counter()
        try:
            audio = load_audio(path)
        except NfpError as e:
            print_error(e)
            failed += 1
            continue
        match = identify(recognizer, audio)
        elapsed = time.perf_counter() - started
        if args.json:
            record = {
                "query": display_path(path),
                "match": match.to_json() if match else None,
                "elapsed_s": round(elapsed, 4),
            }
            print(json.dumps(record, ensure_ascii=False), flush=True)
        elif match:
            print(
                f"{printable(path)}: {track_name(match.track)} at {_format_time(match.offset_s)} "
                f"(confidence {match.confidence:.2f})"
            )
        else:
            print(f"{printable(path)}: no match")
    return 1 if failed else 0


def cmd_tracklist(args: argparse.Namespace) -> int:
    recognizer = _recognizer(args)
    entries = run_steps(tracklist(recognizer, load_audio(args.file)))
    if args.json:
        print(
            json.dumps(
                {"query": str(args.file), "tracks": [e.to_json() for e in entries]},
                ensure_ascii=False,
            )
        )
        return 0
    if not entries:
        print(f"{printable(args.file)}: no library track found")
    for e in entries:
        print(
            f"{_format_time(e.start_s)}–{_format_time(e.end_s)}  {track_name(e.track)}"
            f"  (from {_format_time(e.offset_s)})"
        )
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    if args.list_devices:
        devices = input_devices()
        if not devices:
            print("no audio input devices")
        for d in devices:
            mark = "*" if d.is_default else " "
            print(f"{mark} {printable(d.name)} ({d.channels} ch, {d.default_rate:.0f} Hz)")
        return 0
    device = resolve_device(args.device)
    recognizer = _recognizer(args)
    print(f"listening on {printable(device.name)} … (Ctrl+C to stop)", file=sys.stderr)
    last = None
    for state in listen(recognizer, record_blocks(device)):
        shown = (state.status, state.match.track.id if state.match else None)
        if shown != last:
            print(_describe_state(state), flush=True)
            last = shown
        if args.seconds is not None and state.heard_s >= args.seconds:
            break
    return 0


def _describe_state(state: LiveState) -> str:
    if state.match is None:
        return (
            f"[{state.heard_s:5.1f} s] {'no match' if state.status == 'no_match' else 'listening…'}"
        )
    m = state.match
    return (
        f"[{state.heard_s:5.1f} s] {track_name(m.track)} at {_format_time(m.offset_s)} "
        f"/ {_format_time(m.track.duration_s)} (confidence {m.confidence:.2f})"
    )


def cmd_info(args: argparse.Namespace) -> int:
    """What is in the library, how this machine runs its encoder, and whether both are sound:
    exit 1 with the repairing command for damaged rows, or if this machine's fingerprints differ
    from the checkpoint's reference."""
    library = Library(_db_dir(args), writable=False)  # nothing on disk is created or changed
    info = library_info(library)
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>18}: {printable(value)}")
        if info["hours"]:
            print(f"{'bytes per hour':>18}: {info['bytes_on_disk'] / info['hours']:,.0f}")
    library.check_rows()
    if not info["reference"]["ok"]:
        raise NfpError(info["reference"]["message"])
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    db = _db_dir(args)
    if not library_exists(db):  # a writable Library would create one, to remove nothing
        raise EmptyLibraryError(db)
    with Library(db) as library:
        removed = remove_folder(library, args.folder)
    print(f"removed {removed} tracks of {printable(args.folder)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    if args.out is not None and len(args.checkpoints) > 1:
        raise NfpError("--out names one file: export one checkpoint at a time with it")
    try:
        from engine.model.export import export_onnx
        from engine.model.quantize import calibration_mels, quantize_export
    except ImportError as e:
        raise NfpError(f"exporting needs torch and onnx (pip install 'nfp[train]'): {e}") from e
    mels = calibration_mels(args.int8) if args.int8 else None
    for path in args.checkpoints:
        export = export_onnx(path, args.out)
        print(printable(f"{path}: exported to {export}"))
        if mels is not None:
            print(printable(f"{path}: int8 twin {quantize_export(export, mels)} ({len(mels)} "
                            f"calibration segments from {display_path(args.int8)})"))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
