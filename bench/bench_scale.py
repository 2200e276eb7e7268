"""Scale-out: indexing on Dask workers, and a sharded catalogue against one library.

Indexing: `nfp index` of real tracks (the user's path, a fresh library each time) in one process
and with `--workers 1` and `--workers 2`; the per-file cost of a worker and the writer's cost per
hour of audio project what a 16-core machine would do (16 workers, until the one writer is the
limit).

Search: a simulated catalogue of --rows fingerprints (real tracks' fingerprints plus "music"
filler as `bench_query.py --filler music` makes it), stored as a large library stores it (PQ
codes, an IVF fast-scan index chosen by engine.library.index.choose_spec), split into --shards
shards, against one library holding the same rows. Queries are noisy excerpts of the real tracks,
timed end to end (decode, fingerprint, search, align: what `nfp identify` does per file): p50/p95 of
each, how often the two answer alike, and each shard's memory (index + codes). Remote: two real
libraries searched here and held by two Dask worker processes (what asking workers adds).
Usage: python bench/bench_scale.py [--rows 10000000] [--shards 4] [--queries 40] [--tracks 20]
       [--skip-indexing]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
from bench_query import compressed, identify_file, make_queries, music_filler, rows_bytes
from common import percentiles_ms, real_tracks, report, timed

from engine.core.audio import SAMPLE_RATE, load_audio
from engine.core.threads import apply_thread_policy
from engine.library.binding import bind
from engine.library.index import VectorIndex
from engine.library.library import Library
from engine.library.segments import SegmentMap
from engine.library.store import train_codec
from engine.library.tracks import NewTrack, Track
from engine.model.checkpoint import Checkpoint, default_checkpoint_path
from engine.model.fingerprint import ROWS_VERSION, Fingerprinter
from engine.model.load import load_checkpoint
from engine.query.recognize import Recognizer
from engine.query.shards import Catalogue, Shard

SEGMENTS_PER_HOUR = 7200
INDEX_RUNS = ((), ("--workers", "1"), ("--workers", "2"))
PROJECTED_WORKERS = 16
WRITER_TRACKS = 200  # synthetic tracks of 4 min appended to time the writer alone


def nfp_index(folder: Path, extra: tuple[str, ...]) -> tuple[float, float]:
    """Seconds `nfp index FOLDER` takes into a fresh library, as a user runs it: the whole
    command, and the indexing it reports (without starting Python, the model and a cluster)."""
    db = Path(tempfile.mkdtemp(prefix="nfp-bench-scale-db-"))
    try:
        started = time.perf_counter()
        command = [sys.executable, "-m", "engine.cli", "index", str(folder), "--db", str(db)]
        done = subprocess.run([*command, *extra], check=True, capture_output=True, text=True)
        wall = time.perf_counter() - started
    finally:
        shutil.rmtree(db)
    indexing = re.search(r"h of audio in ([\d.]+) s", done.stdout)
    return wall, float(indexing.group(1))


def writer_s_per_hour(checkpoint: Checkpoint) -> float:
    """The writer's own cost per hour of audio: appending rows and committing tracks (the
    library's crash-safe append, as every indexing run does it)."""
    db = Path(tempfile.mkdtemp(prefix="nfp-bench-writer-"))
    rows = np.random.default_rng(0).standard_normal((480, checkpoint.d)).astype(np.float32)
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    with Library(db) as library:
        bind(library, checkpoint)
        started = time.perf_counter()
        for i in range(WRITER_TRACKS):
            tags = {"title": f"t{i}", "artist": "", "album": "", "duration_s": 240.0}
            library.add_track(
                NewTrack(f"/music/{i}.ogg", 1, i, f"{i:064x}", tags, "", ROWS_VERSION), rows
            )
        elapsed = time.perf_counter() - started
    shutil.rmtree(db)
    return elapsed / (WRITER_TRACKS * len(rows) / SEGMENTS_PER_HOUR)


def indexing_rows(tracks: list[Path], checkpoint: Checkpoint) -> list[dict]:
    folder = Path(tempfile.mkdtemp(prefix="nfp-bench-scale-music-"))
    for t in tracks:
        shutil.copy(t, folder / t.name)
    audio_h = sum(len(load_audio(t)) for t in tracks) / SAMPLE_RATE / 3600
    rows = []
    for extra in INDEX_RUNS:
        wall, seconds = nfp_index(folder, extra)
        rows.append({"part": "index", "run": " ".join(extra) or "one process",
                     "audio_h": round(audio_h, 3), "wall_s": round(wall, 1),
                     "seconds": round(seconds, 1),
                     "x_realtime": round(audio_h * 3600 / seconds)})  # fmt: skip
    shutil.rmtree(folder)
    per_worker_h = rows[1]["seconds"] / audio_h  # seconds per hour of audio on one worker
    writer = writer_s_per_hour(checkpoint)
    projected = max(per_worker_h / PROJECTED_WORKERS, writer)
    rows.append({"part": "index", "run": f"projected: {PROJECTED_WORKERS} workers",
                 "audio_h": round(audio_h, 3), "seconds": round(projected * audio_h, 1),
                 "x_realtime": round(3600 / projected),
                 "writer_s_per_h": round(writer, 2)})  # fmt: skip
    return rows


def named_tracks(names: list[str], lengths: list[int]) -> tuple[SegmentMap, list[Track]]:
    segments = SegmentMap.from_lengths(lengths)
    tracks = [Track(i, name, name, "", "", n * 0.5, int(first), int(n))
              for i, (name, first, n) in enumerate(zip(names, segments.first, lengths,
                                                       strict=True))]  # fmt: skip
    return segments, tracks


def shard_rows(fingerprinter, tracks, n_rows, n_shards, filler, rng):
    """Per shard: its real tracks' fingerprints then its filler, with names and lengths."""
    real = [fingerprinter.audio(load_audio(t)) for t in tracks]
    per_shard = n_rows // n_shards
    out = []
    for s in range(n_shards):
        mine = list(range(s, len(tracks), n_shards))
        n_filler = per_shard - sum(len(real[i]) for i in mine)
        names = [tracks[i].name for i in mine] + [f"filler-{s}"]
        lengths = [len(real[i]) for i in mine] + [n_filler]
        out.append((np.concatenate([*(real[i] for i in mine), filler(n_filler, rng)]), names,
                    lengths))  # fmt: skip
    return out


def shard_memory_mb(index: VectorIndex) -> float:
    return (faiss.serialize_index(index.index).nbytes + rows_bytes(index.vectors)) / 1e6


def search_rows(fingerprinter, checkpoint, tracks, args, rng) -> tuple[list[dict], dict]:
    parts = shard_rows(fingerprinter, tracks, args.rows, args.shards,
                       music_filler(checkpoint.background), rng)  # fmt: skip
    whole_vectors = np.concatenate([v for v, _, _ in parts])
    # One codec for both, so that the two decode the same rows and may answer alike.
    codec, codec_s = timed(lambda v=whole_vectors: train_codec(v))
    whole, whole_build = timed(lambda v=whole_vectors: VectorIndex.build(compressed(v, codec)))
    del whole_vectors
    shards, memory, build = [], [], 0.0
    for vectors, names, lengths in parts:
        index, t = timed(lambda v=vectors: VectorIndex.build(compressed(v, codec)))
        build += t
        shards.append(Shard(index, *named_tracks(names, lengths)))
        memory.append(shard_memory_mb(index))
    del parts
    names = [t.path for s in shards for t in s.tracks]
    lengths = [t.n_segments for s in shards for t in s.tracks]
    one = Recognizer(None, checkpoint, searched=(whole, *named_tracks(names, lengths)))
    sharded = Recognizer(Catalogue(shards), checkpoint)
    folder = Path(tempfile.mkdtemp(prefix="nfp-bench-scale-queries-"))
    queries = make_queries(fingerprinter, tracks, args.queries, rng, folder)
    rows = []
    for length in sorted({q.length_s for q in queries}):
        of_length = [q for q in queries if q.length_s == length]
        row = {"part": "search", "query_s": length}
        answers = {}
        for name, recognizer in (("one", one), ("sharded", sharded)):
            found = [timed(lambda p=q.path, r=recognizer: identify_file(r, p)) for q in of_length]
            answers[name] = [(m.track.path, round(m.offset_s, 2)) if m else None
                             for m, _ in found]  # fmt: skip
            ms = percentiles_ms([t for _, t in found])
            row |= {f"{name}_p50_ms": ms["p50_ms"], f"{name}_p95_ms": ms["p95_ms"]}
            row[f"{name}_near_hit"] = round(float(np.mean(
                [a is not None and a[0] == tracks[q.track].name and abs(a[1] - q.offset_s) <= 0.5
                 for a, q in zip(answers[name], of_length, strict=True)])), 3)  # fmt: skip
        same = [a == b for a, b in zip(answers["one"], answers["sharded"], strict=True)]
        row["same_answer"] = round(float(np.mean(same)), 3)
        rows.append(row)
    shutil.rmtree(folder)
    facts = {"rows": args.rows, "hours": round(args.rows / SEGMENTS_PER_HOUR),
             "shards": args.shards, "codec_train_s": round(codec_s, 1),
             "shard_spec": shards[0].index.spec, "one_spec": whole.spec,
             "shard_memory_mb": [round(m, 1) for m in memory],
             "one_memory_mb": round(shard_memory_mb(whole), 1),
             "shards_build_s": round(build, 1), "one_build_s": round(whole_build, 1)}  # fmt: skip
    return rows, facts


def remote_rows(checkpoint: Checkpoint, tracks: list[Path], n_queries: int, rng) -> list[dict]:
    """Two real libraries searched as a catalogue here and held by two Dask worker processes:
    what asking the workers adds to a query."""
    from distributed import Client, LocalCluster

    root = Path(tempfile.mkdtemp(prefix="nfp-bench-scale-remote-"))
    halves = [tracks[: len(tracks) // 2], tracks[len(tracks) // 2 :]]
    for n, half in enumerate(halves):
        (root / f"music{n}").mkdir()
        for t in half:
            shutil.copy(t, root / f"music{n}" / t.name)
        subprocess.run([sys.executable, "-m", "engine.cli", "index", str(root / f"music{n}"),
                        "--db", str(root / f"db{n}")], check=True, capture_output=True)  # fmt: skip
    dbs = [root / "db0", root / "db1"]
    queries = make_queries(Fingerprinter(checkpoint), tracks, n_queries, rng, root)
    rows = []
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster, \
            Client(cluster) as client:  # fmt: skip
        for where, client_or_none in (("this process", None), ("2 Dask workers", client)):
            catalogue = Catalogue.open(dbs, checkpoint, client=client_or_none)
            recognizer = Recognizer(catalogue, checkpoint)
            for length in (1, 5, 10):
                times = [timed(lambda p=q.path, r=recognizer: identify_file(r, p))[1]
                         for q in queries if q.length_s == length]  # fmt: skip
                rows.append({"part": "remote", "shards_in": where, "query_s": length,
                             **percentiles_ms(times)})  # fmt: skip
            catalogue.close()
    shutil.rmtree(root)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--queries", type=int, default=40, help="per query length")
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--skip-indexing", action="store_true")
    args = parser.parse_args()
    apply_thread_policy()
    rng = np.random.default_rng(0)
    checkpoint = load_checkpoint(default_checkpoint_path())
    fingerprinter = Fingerprinter(checkpoint)
    tracks = real_tracks(args.tracks)
    rows = [] if args.skip_indexing else indexing_rows(tracks[:10], checkpoint)
    rows += remote_rows(checkpoint, tracks[:10], args.queries // 2, rng)
    search, facts = search_rows(fingerprinter, checkpoint, tracks, args, rng)
    report("scale", rows + search, facts)
    print(facts)


if __name__ == "__main__":
    main()
