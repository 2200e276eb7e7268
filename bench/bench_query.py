"""Query latency, recall loss and index size against 10, 100 and 1,000 hours of fingerprints.

Two latencies per query length: `e2e` is what `nfp identify` does for a file (decode the file,
fingerprint it at the sub-hop shifts, search, noise floor, alignment: Recognizer.identify),
`search` the sequence search alone on fingerprints made beforehand (match_sequence).

Real fingerprints of real tracks (the shipped checkpoint) plus filler to reach each size:
"random" unit vectors (the default), or "music": each row the normalised sum of two of the
checkpoint's background fingerprints (other music) plus a little noise, so that the codec is
trained, and the candidates compete, as in a library of real music. Queries are noisy excerpts
(white noise, 10 dB SNR) of the real tracks. The exact index searches float32 rows; the IVF
index is set up as a large library is, on PQ-coded rows (engine.library.store.train_codec) that
re-score its fast-scan candidates.
With --busy N, N other processes keep the CPU busy meanwhile (a pure-Python loop each), as a
desktop's other work does; --search-threads N overrides the engine's faiss threads per search
(engine.core.threads.SEARCH_THREADS) to see what the policy saves on a busy machine.
Usage: python bench/bench_query.py [--hours 10,100,1000] [--queries 50] [--filler random|music]
       [--busy 0] [--search-threads 1] [--out query]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
from common import percentiles_ms, real_tracks, report, timed, write_wav

import engine.core.threads
from engine.core.audio import SAMPLE_RATE, load_audio
from engine.core.threads import apply_thread_policy
from engine.library.index import ADD_CHUNK, FLAT_MAX_VECTORS, VectorIndex, choose_spec
from engine.library.segments import SegmentMap
from engine.library.store import DecodedRows, train_codec
from engine.library.tracks import Track
from engine.model.checkpoint import default_checkpoint_path
from engine.model.fingerprint import Fingerprinter
from engine.model.load import load_checkpoint
from engine.query.recognize import Recognizer
from engine.query.search import match_sequence

SEGMENTS_PER_HOUR = 7200
MIX_NOISE = 0.3  # norm of the noise added to a mixed pair of music fingerprints (norm ≈ 1.4)
QUERY_S = (1, 3, 5, 10)


def library_vectors(fingerprinter: Fingerprinter, tracks: list[Path], hours: float, filler, rng):
    """Real track fingerprints first, filler after; returns vectors and the map."""
    real = [fingerprinter.audio(load_audio(t)) for t in tracks]
    n_filler = max(0, int(hours * SEGMENTS_PER_HOUR) - sum(len(f) for f in real))
    lengths = [len(f) for f in real] + ([n_filler] if n_filler else [])
    return np.concatenate([*real, filler(n_filler, rng)]), SegmentMap.from_lengths(lengths)


def random_filler(d: int) -> Callable[[int, np.random.Generator], np.ndarray]:
    def make(n: int, rng: np.random.Generator) -> np.ndarray:
        rows = rng.standard_normal((n, d), dtype=np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    return make


def music_filler(background: np.ndarray) -> Callable[[int, np.random.Generator], np.ndarray]:
    """Rows in the span of real fingerprints: pairs of background rows mixed, plus noise."""

    def make(n: int, rng: np.random.Generator) -> np.ndarray:
        rows = np.empty((n, background.shape[1]), np.float32)
        for lo in range(0, n, ADD_CHUNK):
            m = min(ADD_CHUNK, n - lo)
            mix = background[rng.integers(len(background), size=(m, 2))].sum(axis=1)
            mix += MIX_NOISE * random_filler(background.shape[1])(m, rng)
            rows[lo : lo + m] = mix / np.linalg.norm(mix, axis=1, keepdims=True)
        return rows

    return make


def make_queries(fingerprinter, tracks, n: int, rng, folder: Path) -> list[Query]:
    """n noisy excerpts of each length, written to folder as WAV files."""
    audio = [load_audio(t) for t in tracks]
    queries = []
    for length in QUERY_S:
        for _ in range(n):
            long_enough = [j for j, a in enumerate(audio) if len(a) > (length + 1) * SAMPLE_RATE]
            i = int(rng.choice(long_enough))
            start = int(rng.uniform(0, len(audio[i]) - (length + 1) * SAMPLE_RATE))
            clip = audio[i][start : start + length * SAMPLE_RATE]
            noisy = clip + rng.standard_normal(len(clip)).astype(np.float32) * np.sqrt(
                np.mean(clip**2) / 10
            )
            path = write_wav(folder / f"q{len(queries)}.wav", noisy)
            queries.append(Query(i, start / SAMPLE_RATE, length, fingerprinter.audio(noisy), path))
    return queries


@dataclass(frozen=True)
class Query:
    track: int
    offset_s: float
    length_s: int
    fingerprints: np.ndarray  # (L, d), at shift 0: the search-only timing's input
    path: Path  # the excerpt as a 16-bit WAV file: the end-to-end timing's input


def identify_file(recognizer: Recognizer, path: Path):
    """What `nfp identify` times per file (engine.cli.cmd_identify): decode, then identify."""
    return recognizer.identify(load_audio(path))


def count_calls(owner: object, method: str) -> list[float]:
    """Wrap owner.method so that each call appends its start time to the returned list."""
    calls, original = [], getattr(owner, method)

    def counted(*args, **kwargs):
        calls.append(time.perf_counter())
        return original(*args, **kwargs)

    setattr(owner, method, counted)
    return calls


def stand_in_tracks(segments: SegmentMap) -> list[Track]:
    """One Track per span of the map (the real tracks, then the filler as one long track)."""
    spans = enumerate(zip(segments.first, segments.length, strict=True))
    return [Track(i, f"track-{i}", f"track {i}", "", "", n * 0.5, int(first), int(n))
            for i, (first, n) in spans]  # fmt: skip


def index_bytes(index: VectorIndex) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        index.save(Path(tmp))
        return sum(f.stat().st_size for f in Path(tmp).iterdir())


def compressed(vectors: np.ndarray, codec: faiss.Index | None = None) -> DecodedRows:
    """The rows as a large library stores them: PQ codes (of `codec`, by default one trained on
    them), decoded on access."""
    codec = codec or train_codec(vectors)
    codes = [codec.sa_encode(vectors[i : i + ADD_CHUNK]) for i in range(0, len(vectors), ADD_CHUNK)]
    return DecodedRows(np.concatenate(codes), codec)


def rows_bytes(rows: np.ndarray | DecodedRows) -> int:
    return rows.codes.nbytes if isinstance(rows, DecodedRows) else rows.nbytes


def run_level(hours, rows, segments, queries, spec, checkpoint) -> list[dict]:
    index, build_s = timed(lambda: VectorIndex.build(rows, spec))
    recognizer = Recognizer(None, checkpoint, searched=(index, segments, stand_in_tracks(segments)))
    encoder_calls = count_calls(recognizer.fingerprinter, "segments")
    results, table = [], []
    for length in QUERY_S:
        times, e2e_times, e2e_hits, escalated = [], [], [], []
        for q in (q for q in queries if q.length_s == length):
            found, t = timed(lambda fp=q.fingerprints: match_sequence(fp, index, segments))
            times.append(t)
            results.append((found.track, found.start_segment) if found else None)
            before = len(encoder_calls)
            match, t = timed(lambda path=q.path: identify_file(recognizer, path))
            e2e_times.append(t)
            # A second encoder call: the shifts disagreed and the short query's were tried too.
            escalated.append(len(encoder_calls) - before > 1)
            e2e_hits.append(match is not None and match.track.id == q.track
                            and abs(match.offset_s - q.offset_s) <= 0.5)  # fmt: skip
        disk = index_bytes(index) + rows_bytes(rows)
        memory = faiss.serialize_index(index.index).nbytes + rows_bytes(rows)
        e2e = {f"e2e_{k}": v for k, v in percentiles_ms(e2e_times).items()}
        search = {f"search_{k}": v for k, v in percentiles_ms(times).items()}
        plain = [t for t, more in zip(e2e_times, escalated, strict=True) if not more]
        e2e |= (
            {f"e2e_unescalated_{k}": v for k, v in percentiles_ms(plain).items()} if plain else {}
        )
        table.append({"hours": hours, "spec": index.spec, "query_s": length, **e2e, **search,
                      "e2e_escalated": round(float(np.mean(escalated)), 3),
                      "e2e_near_hit": round(float(np.mean(e2e_hits)), 3),
                      "build_s": round(build_s, 1),
                      "disk_MB_per_h": round(disk / 1e6 / hours, 3),
                      "ram_MB_per_h": round(memory / 1e6 / hours, 3)})  # fmt: skip
    return table, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", default="10,100,1000")
    parser.add_argument("--queries", type=int, default=50, help="per query length")
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--filler", choices=("random", "music"), default="random")
    parser.add_argument("--busy", type=int, default=0, help="other processes busy meanwhile")
    parser.add_argument("--search-threads", type=int, default=engine.core.threads.SEARCH_THREADS)
    parser.add_argument("--out", default="", help="bench/results/OUT.json (default query[-music])")
    args = parser.parse_args()
    apply_thread_policy()
    engine.core.threads.SEARCH_THREADS = args.search_threads
    with busy_processes(args.busy):
        measure(args)


@contextlib.contextmanager
def busy_processes(n: int):
    """n processes spinning on a core each for the block, as other work on a desktop does."""
    spin = [sys.executable, "-c", "while True: pass"]
    hogs = [subprocess.Popen(spin) for _ in range(n)]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def measure(args: argparse.Namespace) -> None:
    rng = np.random.default_rng(0)
    checkpoint = load_checkpoint(default_checkpoint_path())
    fingerprinter = Fingerprinter(checkpoint)
    if args.filler == "music" and checkpoint.background is None:
        raise SystemExit(f"{checkpoint.path}: no background fingerprints to make music filler")
    filler = (
        music_filler(checkpoint.background)
        if args.filler == "music"
        else random_filler(checkpoint.d)
    )
    tracks = real_tracks(args.tracks)
    with tempfile.TemporaryDirectory(prefix="nfp-bench-queries-") as folder:
        queries = make_queries(fingerprinter, tracks, args.queries, rng, Path(folder))
        rows = []
        for hours in (float(h) for h in args.hours.split(",")):
            vectors, segments = library_vectors(fingerprinter, tracks, hours, filler, rng)
            rows += exact_and_compressed(hours, vectors, segments, queries, checkpoint)
    name = args.out or ("query" if args.filler == "random" else f"query-{args.filler}")
    facts = {"filler": args.filler, "queries_per_length": args.queries,
             "busy_processes": args.busy, "search_threads": args.search_threads}  # fmt: skip
    report(name, rows, facts)


def exact_and_compressed(hours, vectors, segments, queries, checkpoint) -> list[dict]:
    """Rows of one library size, searched exactly and through IVF-PQ, with how often the
    compressed search answers otherwise than the exact one."""
    exact_rows, exact = run_level(hours, vectors, segments, queries, "Flat", checkpoint)
    spec = choose_spec(max(len(vectors), FLAT_MAX_VECTORS + 1), vectors.shape[1])
    ivf_rows, ivf = run_level(hours, compressed(vectors), segments, queries, spec, checkpoint)
    agree = np.mean([a == b for a, b in zip(exact, ivf, strict=True)])
    truth = [(q.track, round(q.offset_s / 0.5)) for q in queries]
    for r, res in ((exact_rows, exact), (ivf_rows, ivf)):
        for row in r:
            row["top1_near_hit"] = round(_near_hits(res, truth, queries, row["query_s"]), 3)
    right_exact, right_ivf = _near(exact, truth), _near(ivf, truth)
    for row in ivf_rows:
        row["recall_loss_vs_exact"] = round(1 - float(agree), 4)
        # Of the queries exact search answers right, the share IVF-PQ answers wrong.
        row["right_lost_vs_exact"] = round(float(np.mean(~right_ivf[right_exact])), 4)
    return exact_rows + ivf_rows


def _near(results, truth) -> np.ndarray:
    """Per query: right track, start within one segment; bool (Q,)."""
    return np.array([r is not None and r[0] == t[0] and abs(r[1] - t[1]) <= 1
                     for r, t in zip(results, truth, strict=True)])  # fmt: skip


def _near_hits(results, truth, queries, length) -> float:
    of_length = np.array([q.length_s == length for q in queries])
    return float(np.mean(_near(results, truth)[of_length]))


if __name__ == "__main__":
    main()
