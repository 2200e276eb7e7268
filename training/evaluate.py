"""The evaluation harness (both papers' protocol): `nfp eval --checkpoint C [--out DIR] [--seed S]`.

It measures what a user gets: every query goes through `Recognizer.best_match`, the path of
`nfp identify` and the app (sub-hop shifts, the silence mask, tie-breaking), and an answer counts
as confident exactly when the engine would report it.

Library: the tracks queries are cut from, in two domains reported side by side: *unseen*, whole
packages the model never trained on (corpus.UNSEEN_PACKAGES: other composers and styles, what a
user's library is to the model; the headline figures), and *in-domain*, the test and val tracks
of the packages it trained on; plus the train tracks and copies of them played 5 % slower and
faster as distractors (music the encoder never paired with the originals, so the search runs
over tens of hours, not a handful of tracks). Queries of 1, 2, 3, 5, 6 and 10 s are cut at
random offsets (never from silence) and degraded at the levels of degrade.LEVELS (a loudspeaker,
a room, a microphone, real noise; at "high" also clipping, an early start and MP3), with the
"eval" half of the degradation bank (noise, voices and rooms the model never heard). A stretch
cell plays unseen-package queries 2 and 5 % faster and slower (tempo only, the pitch kept) at mid
level. Top-1 hit rates:

- exact: right track, and the reported start within half a hop (0.25 s) of the true start;
- near: right track, start within a hop (0.5 s);
- song: right track;
- confident: any answer the app would report; song_confident: the right one.

Non-library music comes from whole packages in neither the training split nor the library
(corpus.NONLIBRARY_PARTS), in two parts that share no package: part a calibrates, per query
length, the evidence at which TARGET_FPR of its queries would pass; part b measures the
false-positive rate at the app's confidence threshold with that calibration, with a 95 % Wilson
interval; the parts' roles swapped give a second measurement. The calibration is returned (and
written into the checkpoint with --write-checkpoint) in the form engine.query.search expects, with
the scoring constants it was made under (engine.model.scoring) and the background fingerprints its
noise floor was measured with (engine.query.search.noise_floor): a sample of the train tracks,
leaving out the packages the tests and benchmarks play.

Everything is drawn from one seed, so a rerun gives the same numbers. The parts: protocol.py
(what is measured), queries.py (query synthesis), outcomes.py (the answers), rates.py (calibration
and figures), report.py (tables and plots); this module loads the music, builds the library and
runs the whole.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import sys
import time
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from engine.core.audio import SAMPLE_RATE, SEGMENT_SAMPLES
from engine.library.index import VectorIndex
from engine.library.segments import SegmentMap
from engine.model.checkpoint import Checkpoint
from engine.model.export import save_checkpoint
from engine.model.fingerprint import Fingerprinter, blank_silence, silent_segments
from engine.model.load import load_checkpoint
from engine.model.scoring import BACKGROUND_ROWS, Scoring
from engine.model.torch_backend import load_torch
from engine.query.recognize import Recognizer
from training.corpus import Track, load_manifest
from training.degrade import LEVELS, Sources, degrade
from training.outcomes import find_repeats, run_queries
from training.protocol import DOMAINS, NO_MUSIC, NONLIBRARY, EvalConfig, query_cells
from training.queries import CONTEXT_S, make_queries, no_music_queries
from training.rates import summarize
from training.report import format_table, write_outputs

# Distractor copies of the train tracks at these speeds (tempo and pitch together, as a record
# played too fast or too slow): other music to a fingerprint, with real music's statistics.
DISTRACTOR_SPEEDS = ((20, 19), (20, 21))  # resample_poly up / down: 0.95× and 1.05×
DATABASE_PARTS = ("held_out", "train", "copies")
# Part of the database fingerprints' cache key: raise it when framing or features change.
FINGERPRINT_CACHE_VERSION = 1
FINGERPRINT_CACHE = "fingerprints"  # in the corpus folder


@dataclass(frozen=True)
class Corpus:
    """The harness's music, float32 (n,) each. The database is the library domains' tracks
    (unseen, then in-domain) followed by the distractors, so database track i is query track
    i of the domains joined in that order."""

    library: dict[str, list[np.ndarray]]  # by domain: in the library, never trained on
    train: list[np.ndarray]
    in_background: list[bool]  # per train track: may the background be drawn from it
    nonlibrary: dict[str, list[np.ndarray]]  # by part
    distractors: str  # EvalConfig.distractors

    @property
    def held_out(self) -> list[np.ndarray]:
        """The library domains' tracks joined: the database's first tracks."""
        return [track for domain in DOMAINS for track in self.library[domain]]

    def first_track(self, domain: str) -> int:
        """Database index of the domain's first track."""
        return sum(len(self.library[d]) for d in DOMAINS[: DOMAINS.index(domain)])

    @property
    def copy_speeds(self) -> tuple[tuple[int, int], ...]:
        return DISTRACTOR_SPEEDS if self.distractors == "resampled" else ()

    def database_hours(self) -> float:
        """Hours of audio in the database (the copies by their resampled length)."""
        train = self.train if self.distractors != "none" else []
        copies = sum(len(t) * up / down for up, down in self.copy_speeds for t in self.train)
        samples = sum(map(len, self.held_out + train)) + copies
        return samples / SAMPLE_RATE / 3600


def evaluate(
    cfg: EvalConfig, *, progress: Callable[[str], None] | None = None
) -> tuple[dict, np.ndarray]:
    """Run the whole protocol; returns the evaluation dict (also written to out_dir if set) and
    the background fingerprints (B, d) its calibration was measured with."""
    say = progress or (lambda _msg: None)
    started = time.time()
    checkpoint = load_checkpoint(cfg.checkpoint)
    corpus = load_corpus(cfg)
    hours = corpus.database_hours()
    say(f"database: {hours:.2f} h")
    cache_dir = fingerprint_cache_dir(cfg)
    say(f"database fingerprints: made once per model, kept in {cache_dir}")
    recognizer, background = harness_recognizer(checkpoint, corpus, cfg, cache_dir)
    sources = Sources.load(cfg.bank, "eval")
    outcomes = []
    for cell in query_cells(cfg):
        say(f"queries: {cell.kind}, {cell.level}, {cell.length_s:g} s, tempo {cell.tempo:g}")
        rng = np.random.default_rng(cell.seed)
        if cell.kind == NO_MUSIC:
            queries = no_music_queries(cell.level, cell.length_s, cell.count, sources, rng)
        else:
            tracks = cell_tracks(corpus, cell.kind, cfg.tracks)
            queries = make_queries(tracks, cell.level, cell.length_s, cell.count, sources, rng,
                                   tempo=cell.tempo)  # fmt: skip
        if cell.kind in DOMAINS:
            queries.track += corpus.first_track(cell.kind)
        out = run_queries(queries, cell.kind, recognizer)
        if cell.kind in DOMAINS:
            out.repeat = find_repeats(out, corpus.held_out)
        outcomes.append(out)
    result = summarize(outcomes, cfg, checkpoint, recognizer, hours, time.time() - started)
    if cfg.out_dir:
        write_outputs(result, outcomes, Path(cfg.out_dir))
    return result, background


def cell_tracks(corpus: Corpus, kind: str, limit: int) -> list[np.ndarray]:
    """The tracks a cell's queries are cut from (a library domain's first limit, if > 0)."""
    if kind in NONLIBRARY:
        return corpus.nonlibrary[kind]
    tracks = corpus.library[kind]
    return tracks[:limit] if limit > 0 else tracks


def load_corpus(cfg: EvalConfig) -> Corpus:
    """The harness's music from the corpus manifest (sorted by track key, so a seed always
    draws the same queries)."""
    manifest = sorted(load_manifest(cfg.corpus), key=lambda t: (t.key, t.path))
    root = Path(cfg.corpus)

    def audio(tracks: Sequence[Track]) -> list[np.ndarray]:
        return [np.load(root / t.path).astype(np.float32) for t in tracks]

    splits = {"unseen": ("unseen",), "in-domain": ("test", "val"),
              **{part: (part,) for part in NONLIBRARY}}  # fmt: skip
    music = {name: audio([t for t in manifest if t.split in wanted])
             for name, wanted in splits.items()}  # fmt: skip
    for name, tracks in music.items():
        if not tracks:
            raise ValueError(f"{root}/manifest.json: no {name} tracks (rebuild the corpus)")
    train_tracks = [t for t in manifest if t.split == "train"]
    in_background = [t.package not in cfg.background_excludes for t in train_tracks]
    if not any(in_background):
        raise ValueError(f"{root}/manifest.json: no train tracks for the background")
    library = {domain: music[domain] for domain in DOMAINS}
    nonlibrary = {part: music[part] for part in NONLIBRARY}
    return Corpus(library, audio(train_tracks), in_background, nonlibrary, cfg.distractors)


def resampled(audio: np.ndarray, up: int, down: int) -> np.ndarray:
    """audio float32 (n,) played at down / up of its speed, float32 (≈ n · up / down,)."""
    from scipy.signal import resample_poly  # in the train extra, like everything here

    return resample_poly(audio, up, down).astype(np.float32)


def harness_recognizer(
    checkpoint: Checkpoint, corpus: Corpus, cfg: EvalConfig, cache_dir: Path | None = None
) -> tuple[Recognizer, np.ndarray]:
    """A Recognizer over the fingerprinted database, with the harness's background
    (harness_background) in place of the checkpoint's, and no thresholds (the harness makes
    them); also returns that background float32 (B, d). The database's fingerprints are kept in
    cache_dir, if given, for the next run of the same model on the same corpus."""
    fingerprinter = Fingerprinter(checkpoint)
    parts = database_fingerprints(fingerprinter, corpus, cache_dir)
    held_out, train, copies = (parts[name] for name in DATABASE_PARTS)
    fps = held_out + (train if corpus.distractors != "none" else []) + copies
    index = VectorIndex.build(np.concatenate(fps))
    searched = (index, SegmentMap.from_lengths([len(f) for f in fps]), [])
    background = harness_background(fingerprinter, train, corpus.in_background, cfg)
    # Today's scoring constants and no thresholds yet: the harness makes them under those.
    uncalibrated = {"calibration": {"scoring": Scoring(room_rows=cfg.room_rows).to_dict()}}
    checkpoint = replace(checkpoint, evaluation=uncalibrated, background=background)
    return Recognizer(None, checkpoint, searched=searched), background


def harness_background(
    fingerprinter: Fingerprinter,
    train: list[np.ndarray],
    in_background: list[bool],
    cfg: EvalConfig,
) -> np.ndarray:
    """The background float32 (B, d) a calibration is measured against (cfg.seed): music
    (draw_background), then cfg.room_rows rooms with no music (room_background)."""
    music = draw_background(train, in_background, cfg.seed)
    if not cfg.room_rows:
        return music
    return np.concatenate(
        [music, room_background(fingerprinter, cfg.bank, cfg.room_rows, cfg.seed)]
    )


def room_background(fingerprinter: Fingerprinter, bank: str, rows: int, seed: int) -> np.ndarray:
    """Fingerprints float32 (rows, d) of 1 s of rooms with no music: the train half of the
    bank's noise, voices, rooms and microphones (never the half the queries hear), in equal
    shares at each harness level (engine.model.scoring.ROOM_ROWS)."""
    sources = Sources.load(bank, "train")
    rng = np.random.default_rng([seed, rows])
    context = int(CONTEXT_S * SAMPLE_RATE)
    shares = np.array_split(np.arange(rows), len(LEVELS))
    audio = [degrade(np.zeros((len(share), context + SEGMENT_SAMPLES), np.float32),
                     SEGMENT_SAMPLES, LEVELS[level], sources, rng)
             for share, level in zip(shares, LEVELS, strict=True)]  # fmt: skip
    return fingerprinter.segments(np.concatenate(audio))


def draw_background(train: list[np.ndarray], in_background: list[bool], seed: int) -> np.ndarray:
    """BACKGROUND_ROWS fingerprints float32 (B, d) drawn (seed) from the train tracks' (n_i, d)
    that may serve as background: the chance similarity the calibration is measured against."""
    pool = np.concatenate([f for f, ok in zip(train, in_background, strict=True) if ok])
    rng = np.random.default_rng([seed, len(pool)])
    return pool[rng.choice(len(pool), min(BACKGROUND_ROWS, len(pool)), replace=False)]


def store_results(cfg: EvalConfig, results_dir: Path) -> None:
    """Write an earlier run's results.json (same checkpoint, corpus and seed) into the
    checkpoint, with the background that run drew, without running its queries again."""
    path = results_dir / "results.json"
    result = json.loads(path.read_text())
    checkpoint = load_checkpoint(cfg.checkpoint)
    protocol = result.get("protocol", {}) if isinstance(result, dict) else {}
    if protocol.get("seed") is None:
        raise ValueError(f"{path}: not the results.json of an nfp eval run")
    # As that run drew it: results from before room rows were drawn with none.
    cfg = replace(cfg, seed=protocol["seed"], room_rows=protocol.get("room_rows", 0))
    if result.get("checkpoint_sha256") != checkpoint.sha256:
        raise ValueError(f"{path}: made with another checkpoint than {cfg.checkpoint}")
    corpus = load_corpus(cfg)
    fingerprinter = Fingerprinter(checkpoint)
    cached = _read_cache(_cache_path(fingerprint_cache_dir(cfg), fingerprinter, corpus))
    raw = cached["train"] if cached else [fingerprinter.audio(t) for t in corpus.train]
    # As database_fingerprints stores them, without the other parts it would read and resample.
    train = [blank_silence(fp, audio) for fp, audio in zip(raw, corpus.train, strict=True)]
    background = harness_background(fingerprinter, train, corpus.in_background, cfg)
    write_into_checkpoint(cfg.checkpoint, result, background)


def write_into_checkpoint(
    checkpoint_path: str | Path, result: dict, background: np.ndarray
) -> None:
    """Store result as the checkpoint's evaluation (the engine reads its "calibration") with
    the background the calibration assumes."""
    ckpt = load_torch(checkpoint_path)
    save_checkpoint(checkpoint_path, ckpt.model, ckpt.config, training=ckpt.training,
                    evaluation=result, background=background)  # fmt: skip


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True, help="the .pt checkpoint to evaluate")
    parser.add_argument("--out", default="", help="folder for results.json, table.txt and PNGs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queries", type=int, default=EvalConfig.queries,
                        help="library queries per level and length (%(default)s)")  # fmt: skip
    parser.add_argument("--nonlibrary-queries", type=int, default=EvalConfig.nonlibrary_queries,
                        help="non-library queries per level, length and part "
                             "(default %(default)s)")  # fmt: skip
    parser.add_argument("--no-music-queries", type=int, default=EvalConfig.no_music_queries,
                        help="queries of a room with no music per level and length; 0 leaves "
                             "them out (default %(default)s)")  # fmt: skip
    parser.add_argument("--tracks", type=int, default=0,
                        help="cut library queries from N test/val tracks only")  # fmt: skip
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--bank", default="corpus/degradations.npz")
    parser.add_argument("--distractors", choices=("resampled", "train", "none"),
                        default=EvalConfig.distractors,
                        help="database distractors: the train split and its copies at 0.95x "
                             "and 1.05x speed (default), the train split, or none")  # fmt: skip
    parser.add_argument("--room-rows", type=int, default=EvalConfig.room_rows,
                        help="background rows of rooms with no music; 0: music only "
                             "(default %(default)s)")  # fmt: skip
    parser.add_argument("--write-checkpoint", action="store_true",
                        help="store the results and calibration inside the checkpoint")  # fmt: skip
    parser.add_argument("--from-results", metavar="DIR",
                        help="with --write-checkpoint: store the results.json that an "
                             "earlier run of this checkpoint left in DIR")  # fmt: skip


def run_eval(args: argparse.Namespace) -> int:
    cfg = EvalConfig(checkpoint=args.checkpoint, corpus=args.corpus, bank=args.bank,
                     out_dir=args.out, seed=args.seed, queries=args.queries,
                     nonlibrary_queries=args.nonlibrary_queries,
                     no_music_queries=args.no_music_queries, tracks=args.tracks,
                     distractors=args.distractors, room_rows=args.room_rows)  # fmt: skip
    if args.from_results:
        return _store_earlier_results(cfg, args)
    try:
        result, background = evaluate(
            cfg, progress=lambda msg: print(msg, file=sys.stderr, flush=True)
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"nfp eval: {e}", file=sys.stderr)
        return 1
    print(format_table(result))
    if args.write_checkpoint:
        write_into_checkpoint(args.checkpoint, result, background)
        print(f"evaluation written into {args.checkpoint}")
    return 0


def _store_earlier_results(cfg: EvalConfig, args: argparse.Namespace) -> int:
    if not args.write_checkpoint:
        print("nfp eval: --from-results stores results: add --write-checkpoint", file=sys.stderr)
        return 2
    try:
        store_results(cfg, Path(args.from_results))
    except (FileNotFoundError, ValueError) as e:
        print(f"nfp eval: {e}", file=sys.stderr)
        return 1
    print(f"evaluation from {args.from_results} written into {args.checkpoint}")
    return 0


def database_fingerprints(
    fingerprinter: Fingerprinter, corpus: Corpus, cache_dir: Path | None
) -> dict[str, list[np.ndarray]]:
    """Fingerprints float32 (segments, d) of every database track, by part (DATABASE_PARTS),
    as the app's library stores them (silent segments zeroed: blank_silence); the
    encoder's rows are read from cache_dir when an earlier run of the same weights, backend and
    precision on the same corpus left them there (two thirds of a run's time is spent making
    them)."""
    path = None if cache_dir is None else _cache_path(cache_dir, fingerprinter, corpus)
    cached = _read_cache(path)
    stored = None if cached is None else itertools.chain(*cached.values())
    rows, silent = [], []
    for audio in database_audio(corpus):  # one pass: the copies are resampled once
        rows.append(fingerprinter.audio(audio) if stored is None else next(stored))
        silent.append(silent_segments(audio))
    counts = (len(corpus.held_out), len(corpus.train))
    held_out, train, copies = rows[: counts[0]], rows[counts[0] : sum(counts)], rows[sum(counts) :]
    parts = dict(zip(DATABASE_PARTS, (held_out, train, copies), strict=True))
    if cached is None and path is not None:
        _write_parts(path, parts)  # the encoder's rows, before silence is zeroed
    for fp, mask in zip(rows, silent, strict=True):
        fp[mask] = 0.0
    return parts


def database_audio(corpus: Corpus) -> Iterator[np.ndarray]:
    """Every database track's audio float32 (n,), in the order of DATABASE_PARTS; the copies are
    resampled one at a time (all of them at once would take gigabytes)."""
    yield from corpus.held_out + corpus.train
    for up, down in corpus.copy_speeds:
        for track in corpus.train:
            yield resampled(track, up, down)


def fingerprint_cache_dir(cfg: EvalConfig) -> Path:
    """Where the database's fingerprints are kept between runs: beside the corpus they are of."""
    return Path(cfg.corpus) / FINGERPRINT_CACHE


def _cache_key(fingerprinter: Fingerprinter, corpus: Corpus) -> str:
    """What the database's fingerprints depend on: the weights, the numeric path, the music
    (its lengths and a sample of every track) and the distractor speeds."""
    digest = hashlib.sha256(f"{FINGERPRINT_CACHE_VERSION}".encode())
    digest.update(fingerprinter.checkpoint.weights_sha256.encode())
    digest.update(f"{fingerprinter.checkpoint.backend} {fingerprinter.precision.chosen}".encode())
    digest.update(repr(corpus.copy_speeds).encode())
    for track in corpus.held_out + corpus.train:
        digest.update(np.int64(len(track)).tobytes())
        digest.update(track[:: max(1, len(track) // 64)].tobytes())
    return digest.hexdigest()[:32]


def _cache_path(cache_dir: Path, fingerprinter: Fingerprinter, corpus: Corpus) -> Path:
    return cache_dir / f"{_cache_key(fingerprinter, corpus)}.npz"


def _read_cache(path: Path | None) -> dict[str, list[np.ndarray]] | None:
    """The cached parts, or None where there are none (or only a damaged or foreign file)."""
    if path is None or not path.is_file():
        return None
    try:
        with np.load(path) as stored:
            return {name: np.split(stored[name], np.cumsum(stored[f"{name}_lengths"])[:-1])
                    for name in DATABASE_PARTS}  # fmt: skip
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return None


def _write_parts(path: Path, parts: dict[str, list[np.ndarray]]) -> None:
    """Written beside and renamed, so an interrupted run never leaves half a file to read."""
    arrays = {}
    for name, fps in parts.items():
        arrays[name] = np.concatenate(fps) if fps else np.zeros((0, 0), np.float32)
        arrays[f"{name}_lengths"] = np.array([len(f) for f in fps], np.int64)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial.npz")
    np.savez(partial, **arrays)
    os.replace(partial, path)
