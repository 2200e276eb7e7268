"""The evaluation harness (both papers' protocol): `nfp eval --checkpoint C [--out DIR] [--seed S]`.

It measures what a user gets: every query goes through `Recognizer.best_match`, the path of
`nfp identify` and the app (sub-hop shifts, the silence mask, tie-breaking), and an answer counts
as confident exactly when the engine would report it.

Library: the tracks queries are cut from, in two domains reported side by side: *unseen*, whole
packages the model never trained on (corpus.UNSEEN_PACKAGES: other composers and styles, what a
user's library is to the model; the headline figures), and *in-domain*, the test and val tracks
of the packages it trained on; plus the train tracks and copies of them played 5 % slower and
faster as distractors (music the encoder never paired with the originals, so the search runs
over tens of hours, not a handful of tracks). Queries of 1, 2, 3, 5, 6 and 10 s are cut at random
offsets and degraded at the levels of degrade.LEVELS (a loudspeaker, a room, a microphone, real
noise; at "high" also clipping, an early start and MP3), with the "eval" half of the degradation
bank (noise, voices and rooms the model never heard). A stretch cell plays unseen-package
queries 2 and 5 % faster and slower (tempo only, the pitch kept) at mid level. Top-1 hit rates:

- exact: right track, and the reported start lies in the segment nearest the true start;
- near: right track, start within ±1 segment (±0.5 s);
- song: right track;
- confident: any answer the app would report; song_confident: the right one.

Non-library music comes from whole packages in neither the training split nor the library
(corpus.NONLIBRARY_PARTS), in two parts that share no package: part a calibrates, per query
length, the evidence at which TARGET_FPR of its queries would pass; part b measures the
false-positive rate at the app's confidence threshold with that calibration, with a 95 % Wilson
interval; the parts' roles swapped give a second measurement. The calibration is returned (and
written into the checkpoint with --write-checkpoint) in the form engine.search expects, with the
scoring constants it was made under (engine.scoring) and the background fingerprints its noise
floor was measured with (engine.search.noise_floor): a sample of the train tracks, leaving out
the packages the tests and benchmarks play.

Everything is drawn from one seed, so a rerun gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from engine.audio import HOP_S, HOP_SAMPLES, SAMPLE_RATE, count_segments
from engine.checkpoint import Checkpoint, load_checkpoint
from engine.fingerprint import Fingerprinter
from engine.index import VectorIndex
from engine.recognize import Recognizer
from engine.scoring import BACKGROUND_ROWS, Scoring
from engine.search import CONFIDENCE_THRESHOLD, SegmentMap, confidence_from_evidence
from engine.torch_backend import load_torch, save_checkpoint
from training.corpus import Track, load_manifest
from training.degrade import LEVELS, Sources, at_tempo, degrade

QUERY_LENGTHS_S = (1.0, 2.0, 3.0, 5.0, 6.0, 10.0)
# Calibrated false-positive rate on non-library music: below the app's target of 0.5 % measured
# on music the calibration never saw, since a threshold set on one part passes more of another.
TARGET_FPR = 0.0025
CONTEXT_S = 1.0  # audio before each query that feeds its reverb tail (the rooms ring up to 1 s)
REPEAT_CORR = 0.9  # clean-audio correlation above which two places of a track are one repeat
QUERY_CHUNK = 64  # queries degraded together (bounds the FFT memory)
# Distractor copies of the train tracks at these speeds (tempo and pitch together, as a record
# played too fast or too slow): other music to a fingerprint, with real music's statistics.
DISTRACTOR_SPEEDS = ((20, 19), (20, 21))  # resample_poly up / down: 0.95× and 1.05×
NONLIBRARY = ("nonlibrary-a", "nonlibrary-b")  # calibrate on the first, measure on the second
DOMAINS = ("unseen", "in-domain")  # library queries: never-trained packages, held-out tracks
# The stretch cell: tempo changes (pitch kept) of unseen-package queries at one level.
STRETCH_TEMPOS = (0.95, 0.98, 1.02, 1.05)
STRETCH_LENGTHS_S = (2.0, 5.0, 10.0)
STRETCH_LEVEL = "mid"
WILSON_Z = 1.96  # 95 % interval


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str
    corpus: str = "corpus"
    bank: str = "corpus/degradations.npz"
    out_dir: str = ""  # results.json and PNGs; "" writes nothing
    seed: int = 0
    queries: int = 200  # library queries per (level, length)
    nonlibrary_queries: int = 200  # non-library queries per (level, length) in each part
    tracks: int = 0  # cut library queries from only this many test/val tracks (0: all)
    distractors: str = "resampled"  # "resampled": train + its copies; "train"; "none"
    levels: tuple[str, ...] = ("low", "mid", "high")
    lengths_s: tuple[float, ...] = QUERY_LENGTHS_S
    stretch_tempos: tuple[float, ...] = STRETCH_TEMPOS  # () leaves the stretch cell out
    stretch_lengths_s: tuple[float, ...] = STRETCH_LENGTHS_S
    # The end-to-end tests and benchmarks play Wesnoth tracks as music a user does or does not
    # own; a background that knew them would make the "not in my library" checks easy.
    background_excludes: tuple[str, ...] = ("wesnoth-1.16-music",)


@dataclass
class QuerySet:
    """Degraded queries of one length and level with ground truth; audio float32 (Q, n)."""

    level: str
    length_s: float
    tempo: float  # 1.0, or the tempo the queries were played at (pitch kept)
    track: np.ndarray  # int64 (Q,): index into the list of tracks the queries were cut from
    start_s: np.ndarray  # float64 (Q,): true start of the query inside that track
    audio: np.ndarray  # float32 (Q, n)


@dataclass
class Outcome:
    """Per-query results of one QuerySet (arrays of length Q)."""

    level: str
    length_s: float
    n_segments: int  # of the query at its first start
    kind: str  # "unseen", "in-domain" (library queries), "nonlibrary-a" or "nonlibrary-b"
    tempo: float  # 1.0, or the stretch cell's tempo
    found_track: np.ndarray  # int64, -1 where no match
    true_track: np.ndarray  # int64, database track index (-1 for non-library)
    true_segment: np.ndarray  # int64, segment nearest the true start
    found_segment: np.ndarray  # int64, segment nearest the reported start
    offset_s: np.ndarray  # the reported start
    true_start_s: np.ndarray
    evidence: np.ndarray
    score: np.ndarray
    used_segments: np.ndarray  # int64, segments the winning alignment counted (its confidence)
    repeat: np.ndarray | None = None  # bool: wrong offset, but the music there is the same


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
    recognizer, background = harness_recognizer(checkpoint, corpus, cfg.seed)
    sources = Sources.load(cfg.bank, "eval")
    outcomes = []
    for cell in query_cells(cfg):
        say(f"queries: {cell.kind}, {cell.level}, {cell.length_s:g} s, tempo {cell.tempo:g}")
        rng = np.random.default_rng(cell.seed)
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


@dataclass(frozen=True)
class Cell:
    """One set of queries: what they are cut from, how, and the seed they are drawn with."""

    kind: str  # a domain or a non-library part
    level: str
    length_s: float
    tempo: float
    count: int
    seed: tuple[int, ...]


def query_cells(cfg: EvalConfig) -> list[Cell]:
    """Every query set of the protocol: each level and length in every domain and non-library
    part, then the stretch cell (unseen domain, STRETCH_LEVEL)."""
    kinds = [(k, cfg.queries) for k in DOMAINS] + [(p, cfg.nonlibrary_queries) for p in NONLIBRARY]
    cells = [Cell(kind, level, length_s, 1.0, count, (cfg.seed, li, qi, ki))
             for li, level in enumerate(cfg.levels)
             for qi, length_s in enumerate(cfg.lengths_s)
             for ki, (kind, count) in enumerate(kinds)]  # fmt: skip
    cells += [Cell("unseen", STRETCH_LEVEL, length_s, tempo, cfg.queries,
                   (cfg.seed, 100, qi, round(1000 * tempo)))
              for qi, length_s in enumerate(cfg.stretch_lengths_s)
              for tempo in cfg.stretch_tempos]  # fmt: skip
    return cells


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
    checkpoint: Checkpoint, corpus: Corpus, seed: int
) -> tuple[Recognizer, np.ndarray]:
    """A Recognizer over the fingerprinted database, with a background drawn (seed) from the
    train tracks in place of the checkpoint's, and no thresholds (the harness makes them);
    also returns that background float32 (B, d)."""
    fingerprinter = Fingerprinter(checkpoint)
    held_out, train = ([fingerprinter.audio(t) for t in tracks]
                       for tracks in (corpus.held_out, corpus.train))  # fmt: skip
    # Copies are made one at a time: all of them at once would take gigabytes.
    copies = [fingerprinter.audio(resampled(t, up, down))
              for up, down in corpus.copy_speeds for t in corpus.train]  # fmt: skip
    fps = held_out + (train if corpus.distractors != "none" else []) + copies
    index = VectorIndex.build(np.concatenate(fps))
    searched = (index, SegmentMap.from_lengths([len(f) for f in fps]), [])
    pool = np.concatenate([f for f, ok in zip(train, corpus.in_background, strict=True) if ok])
    rng = np.random.default_rng([seed, len(pool)])
    background = pool[rng.choice(len(pool), min(BACKGROUND_ROWS, len(pool)), replace=False)]
    # Today's scoring constants and no thresholds yet: the harness makes them under those.
    uncalibrated = {"calibration": {"scoring": Scoring().to_dict()}}
    checkpoint = replace(checkpoint, evaluation=uncalibrated, background=background)
    return Recognizer(None, checkpoint, searched=searched), background


def make_queries(
    tracks: Sequence[np.ndarray],
    level: str,
    length_s: float,
    n_queries: int,
    sources: Sources,
    rng: np.random.Generator,
    *,
    tempo: float = 1.0,
) -> QuerySet:
    """n_queries degraded queries at random places of tracks (uniform over usable audio),
    played at tempo (pitch kept) when it is not 1."""
    n = round(length_s * SAMPLE_RATE)
    context = int(CONTEXT_S * SAMPLE_RATE)
    # Source samples a query and its context take; a little more for the stretcher's edges.
    span = context + n if tempo == 1.0 else int(np.ceil((context + n) * tempo)) + HOP_SAMPLES
    usable = np.array([max(0, len(t) - span) for t in tracks], np.float64)
    if usable.sum() <= 0:
        raise ValueError(f"no track is longer than a {length_s:g} s query")
    track = rng.choice(len(tracks), size=n_queries, p=usable / usable.sum())
    first = (rng.random(n_queries) * usable[track]).astype(np.int64)  # context start
    audio = np.empty((n_queries, n), np.float32)
    for lo in range(0, n_queries, QUERY_CHUNK):
        rows = range(lo, min(lo + QUERY_CHUNK, n_queries))
        raw = np.stack([at_tempo(tracks[track[i]][first[i] : first[i] + span], tempo)[: context + n]
                        for i in rows])  # fmt: skip
        audio[lo : lo + len(raw)] = degrade(raw, n, LEVELS[level], sources, rng)
    start_s = (first + context * tempo) / SAMPLE_RATE
    return QuerySet(level, length_s, tempo, track.astype(np.int64), start_s, audio)


def run_queries(queries: QuerySet, kind: str, recognizer: Recognizer) -> Outcome:
    """Identify every query as `nfp identify` does (Recognizer.best_match)."""
    n_queries, n = queries.audio.shape
    found, found_segment, used = (np.full(n_queries, -1, np.int64) for _ in range(3))
    offset_s, evidence, score = (np.zeros(n_queries) for _ in range(3))
    for q in range(n_queries):
        match = recognizer.best_match(queries.audio[q])
        if match is not None:
            found[q], offset_s[q], used[q] = match.track, match.offset_s, match.n_query_segments
            evidence[q], score[q] = match.evidence, match.score
            found_segment[q] = round(match.offset_s / HOP_S)
    library = kind in DOMAINS
    return Outcome(
        level=queries.level,
        length_s=queries.length_s,
        n_segments=count_segments(n),
        kind=kind,
        tempo=queries.tempo,
        found_track=found,
        true_track=queries.track if library else np.full(n_queries, -1, np.int64),
        true_segment=np.round(queries.start_s / HOP_S).astype(np.int64),
        found_segment=found_segment,
        offset_s=offset_s,
        true_start_s=queries.start_s,
        evidence=evidence,
        score=score,
        used_segments=used,
    )


def find_repeats(outcome: Outcome, tracks: Sequence[np.ndarray]) -> np.ndarray:
    """Right-track, wrong-offset answers that point at a repeat of the same music, bool (Q,).

    Game music loops: a section often recurs sample for sample, and then no fingerprint can tell
    the two places apart. An answer counts as a repeat when the clean audio at the answered
    offset (give or take half a hop, as loops need not be a whole number of hops long)
    correlates >= REPEAT_CORR with the clean audio at the true offset, over the query's length
    (at most 3 s).
    """
    from scipy.signal import correlate  # in the train extra, like everything here

    repeat = np.zeros(len(outcome.evidence), bool)
    if outcome.tempo != 1.0:
        return repeat  # a stretched query's audio is not sample-identical to any place
    shift_s = (outcome.found_segment - outcome.true_segment) * HOP_S
    right_track = outcome.found_track == outcome.true_track
    n = round(min(outcome.length_s, 3.0) * SAMPLE_RATE)
    lag = HOP_SAMPLES // 2
    for q in np.flatnonzero(right_track & (outcome.found_segment != outcome.true_segment)):
        audio = tracks[outcome.true_track[q]]
        a0 = round(outcome.true_start_s[q] * SAMPLE_RATE)
        b0 = round((outcome.true_start_s[q] + shift_s[q]) * SAMPLE_RATE) - lag
        if b0 < 0 or b0 + n + 2 * lag > len(audio) or a0 + n > len(audio):
            continue
        a, b = audio[a0 : a0 + n], audio[b0 : b0 + n + 2 * lag]
        dots = correlate(b, a, mode="valid", method="fft")  # (2 * lag + 1,)
        energy = np.convolve(b**2, np.ones(n), mode="valid")  # of each window of b
        corr = dots / np.sqrt(np.maximum(energy * float(a @ a), 1e-12))
        repeat[q] = float(corr.max()) >= REPEAT_CORR
    return repeat


def calibrate(outcomes: Sequence[Outcome], part: str, target_fpr: float = TARGET_FPR) -> dict:
    """Evidence thresholds per query length (in segments) passing target_fpr of the part's
    non-library queries, pooled over levels: {"evidence_threshold": {"n": value}, …}."""
    table = {}
    for n_seg in sorted({o.n_segments for o in outcomes}):
        ev = np.concatenate([o.evidence for o in outcomes
                             if o.kind == part and o.n_segments == n_seg])  # fmt: skip
        # Strictly above the (1 - fpr) quantile; never zero, or every query would pass.
        table[str(n_seg)] = max(float(np.quantile(ev, 1 - target_fpr, method="higher")), 1e-3)
    return {"evidence_threshold": table, "target_fpr": target_fpr, "calibrated_on": part}


def accepted(outcome: Outcome, calibration: dict) -> np.ndarray:
    """Which queries the app would report (confidence >= CONFIDENCE_THRESHOLD), bool (Q,)."""
    pairs = zip(outcome.evidence, outcome.used_segments, strict=True)
    conf = np.array([confidence_from_evidence(e, int(n), calibration) for e, n in pairs])
    return (conf >= CONFIDENCE_THRESHOLD) & (outcome.found_track >= 0)


def hit_rates(outcome: Outcome, calibration: dict) -> dict[str, float]:
    """Top-1 rates of library queries: exact / near / song, and the answers the app reports."""
    song = outcome.found_track == outcome.true_track
    delta = np.abs(outcome.found_segment - outcome.true_segment)
    sure = accepted(outcome, calibration)
    return {
        "exact": float(np.mean(song & (delta == 0))),
        "near": float(np.mean(song & (delta <= 1))),
        "song": float(np.mean(song)),
        # exact, or a wrong segment holding the same music (a loop): the best any system can do
        "exact_or_repeat": float(np.mean(song & ((delta == 0) | outcome.repeat))),
        "confident": float(np.mean(sure)),  # the app names a track at all
        "song_confident": float(np.mean(song & sure)),  # … and it is the right one
        "exact_confident": float(np.mean(song & sure & ((delta == 0) | outcome.repeat))),
        # Median |offset_s - true start| of right-track answers; None when there are none.
        "offset_error_s": float(np.median(np.abs(outcome.offset_s - outcome.true_start_s)[song]))
        if song.any()
        else None,
        "queries": len(song),
    }


def wilson(k: int, n: int, z: float = WILSON_Z) -> tuple[float, float]:
    """Wilson score interval of a rate of k in n (the normal one fails near 0)."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def false_positives(outcomes: Sequence[Outcome], part: str, calibration: dict) -> dict:
    """The part's confident answers at the calibration: rate, 95 % interval and counts, for
    all its queries and per level."""

    def rate(selected: list[Outcome]) -> dict:
        hits = np.concatenate([accepted(o, calibration) for o in selected])
        lo, hi = wilson(int(hits.sum()), len(hits))
        return {"rate": float(hits.mean()), "ci95": [lo, hi],
                "false": int(hits.sum()), "queries": len(hits)}  # fmt: skip

    measured = [o for o in outcomes if o.kind == part]
    levels = dict.fromkeys(o.level for o in measured)
    lengths = dict.fromkeys(o.length_s for o in measured)
    by_level = {lv: rate([o for o in measured if o.level == lv]) for lv in levels}
    by_length = {f"{s:g}": rate([o for o in measured if o.length_s == s]) for s in lengths}
    long = [o for o in measured if o.length_s >= 3]
    return {"measured_on": part, "all": rate(measured), "by_level": by_level,
            "by_length": by_length, "3s_and_longer": rate(long) if long else None}  # fmt: skip


def summarize(
    outcomes: Sequence[Outcome],
    cfg: EvalConfig,
    checkpoint: Checkpoint,
    recognizer: Recognizer,
    database_hours: float,
    wall_s: float,
) -> dict:
    """The evaluation dict stored in checkpoints and results.json."""
    calibrate_on, measure_on = NONLIBRARY
    calibration = calibrate(outcomes, calibrate_on)
    calibration["scoring"] = recognizer.scoring.to_dict()
    rates: dict[str, dict[str, dict[str, dict]]] = {domain: {} for domain in DOMAINS}
    stretch: dict[str, dict[str, dict]] = {}
    fpr: dict[str, dict[str, float]] = {}
    for o in outcomes:
        key = f"{o.length_s:g}"
        if o.kind in DOMAINS and o.tempo != 1.0:
            stretch.setdefault(f"{o.tempo:g}", {})[key] = hit_rates(o, calibration)
        elif o.kind in DOMAINS:
            rates[o.kind].setdefault(o.level, {})[key] = hit_rates(o, calibration)
        elif o.kind == measure_on:
            fpr.setdefault(o.level, {})[key] = float(np.mean(accepted(o, calibration)))
    measured = false_positives(outcomes, measure_on, calibration)
    swapped = false_positives(outcomes, calibrate_on, calibrate(outcomes, measure_on))
    return {
        "calibration": calibration,
        "hit_rates": rates["unseen"],  # the headline: packages the model never trained on
        "hit_rates_in_domain": rates["in-domain"],
        "hit_rates_stretch": {"level": STRETCH_LEVEL, "domain": "unseen", "by_tempo": stretch},
        "false_positive_rate": fpr,
        "false_positive_rate_all": measured["all"]["rate"],
        "false_positive_rate_swapped": swapped["all"]["rate"],
        "false_positives": measured,
        "false_positives_swapped": swapped,
        "protocol": {
            **{k: v for k, v in asdict(cfg).items() if k != "out_dir"},
            "levels_defined": {name: asdict(LEVELS[name]) for name in cfg.levels},
            "database_hours": round(database_hours, 3),
            "confidence_threshold": CONFIDENCE_THRESHOLD,
            "path": "engine.recognize.Recognizer.best_match",
        },
        "checkpoint_sha256": checkpoint.sha256,
        "wall_time_s": round(wall_s, 1),
    }


def format_table(result: dict) -> str:
    """Hit rates (%) by level and match kind against query length, unseen packages and
    in-domain side by side, then the stretch cell and the false positives."""
    lengths = list(next(iter(result["hit_rates"].values())))
    head = f"{'level':6s} {'kind':15s}" + "".join(f"{s + ' s':>14s}" for s in lengths)
    lines = [head, f"{'':22s}" + f"{'unseen/in-dom':>14s}" * len(lengths), "-" * len(head)]
    for level, by_length in result["hit_rates"].items():
        in_domain = result.get("hit_rates_in_domain", {}).get(level, {})
        for kind in RATE_KINDS:
            cells = "".join(f"{100 * by_length[s][kind]:7.1f}" + (
                f"/{100 * in_domain[s][kind]:<6.1f}" if s in in_domain else " " * 7)
                for s in lengths)  # fmt: skip
            lines.append(f"{level:6s} {kind:15s}{cells}")
    lines += stretch_lines(result.get("hit_rates_stretch"))
    for level, by_length in result["false_positive_rate"].items():
        cells = "".join(f"{100 * by_length[s]:8.1f}" for s in lengths)
        lines.append(f"{level:6s} {'false positive':15s}{cells}")
    thresholds = result["calibration"]["evidence_threshold"]
    lines.append(f"{'':6s} {'threshold':15s}" + "".join(f"{v:8.2f}" for v in thresholds.values()))
    lines += [fpr_line(result["false_positives"]), fpr_line(result["false_positives_swapped"])]
    long = result["false_positives"].get("3s_and_longer")
    if long:
        lo, hi = (100 * x for x in long["ci95"])
        counts = f"{long['false']} of {long['queries']}"
        lines.append(f"  of which 3-10 s queries: {100 * long['rate']:.2f} % "
                     f"(95 % CI {lo:.2f}-{hi:.2f} %, {counts})")  # fmt: skip
    return "\n".join(lines)


RATE_KINDS = ("exact", "exact_or_repeat", "near", "song", "confident", "song_confident")
STRETCH_KINDS = ("near", "song", "song_confident")


def stretch_lines(stretch: dict | None) -> list[str]:
    """The stretch cell's rates (%) by tempo against query length; none without the cell."""
    if not stretch or not stretch["by_tempo"]:
        return []
    by_tempo = stretch["by_tempo"]
    lengths = list(next(iter(by_tempo.values())))
    lines = [f"stretch ({stretch['level']}, {stretch['domain']}, tempo; pitch kept)"
             + "".join(f"{s + ' s':>8s}" for s in lengths)]  # fmt: skip
    for tempo, by_length in by_tempo.items():
        for kind in STRETCH_KINDS:
            cells = "".join(f"{100 * by_length[s][kind]:8.1f}" for s in lengths)
            lines.append(f"  x{tempo:6s} {kind:15s}{'':18s}{cells}")
    return lines


def fpr_line(measured: dict) -> str:
    """'false positives on nonlibrary-b: 0.42 % (95 % CI 0.25-0.70 %, 15 of 3600)'."""
    a = measured["all"]
    lo, hi = (100 * x for x in a["ci95"])
    return (f"false positives on {measured['measured_on']}: {100 * a['rate']:.2f} % "
            f"(95 % CI {lo:.2f}-{hi:.2f} %, {a['false']} of {a['queries']})")  # fmt: skip


def write_outputs(result: dict, outcomes: Sequence[Outcome], out_dir: Path) -> None:
    """results.json, table.txt, queries.npz (every query's outcome), hit_rate.png, scores.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = {}
    for name in ("found_track", "true_track", "true_segment", "found_segment", "offset_s",
                 "true_start_s", "evidence", "score", "used_segments"):  # fmt: skip
        columns[name] = np.concatenate([getattr(o, name) for o in outcomes])
    for name in ("level", "kind", "length_s", "n_segments", "tempo"):
        columns[name] = np.concatenate([[getattr(o, name)] * len(o.evidence) for o in outcomes])
    np.savez_compressed(out_dir / "queries.npz", **columns)
    (out_dir / "results.json").write_text(json.dumps(result, indent=1))
    (out_dir / "table.txt").write_text(format_table(result) + "\n")
    plot_hit_rates(result, out_dir / "hit_rate.png")
    plot_scores(outcomes, result["calibration"], out_dir / "scores.png")


def plot_hit_rates(result: dict, path: Path) -> None:
    """Hit rate against query length: one line per level and match kind."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    colours = {"low": "tab:green", "mid": "tab:orange", "high": "tab:red"}
    styles = {"exact": ":", "near": "--", "song": "-"}
    for level, by_length in result["hit_rates"].items():
        lengths = [float(s) for s in by_length]
        for kind, style in styles.items():
            rates = [100 * by_length[s][kind] for s in by_length]
            ax.plot(lengths, rates, style, marker="o", ms=3,
                    color=colours.get(level), label=f"{level} {kind}")  # fmt: skip
    ax.set(xlabel="query length (s)", ylabel="top-1 hit rate (%)", ylim=(0, 101),
           title="Hit rate vs query length")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(ncol=3, fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_scores(outcomes: Sequence[Outcome], calibration: dict, path: Path) -> None:
    """Evidence of library vs non-library queries per query length, threshold marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lengths = sorted({(o.n_segments, o.length_s) for o in outcomes})
    fig, axes = plt.subplots(2, (len(lengths) + 1) // 2, figsize=(11, 5.5), squeeze=False)
    for ax, (n_seg, length_s) in zip(axes.flat, lengths, strict=False):
        lib = np.concatenate([o.evidence for o in outcomes if o.kind in DOMAINS
                              and o.tempo == 1.0 and o.n_segments == n_seg])  # fmt: skip
        non = np.concatenate([o.evidence for o in outcomes
                              if o.kind in NONLIBRARY and o.n_segments == n_seg])  # fmt: skip
        bins = np.linspace(0, max(lib.max(), non.max(), 1e-3) * 1.02, 40)
        ax.hist(lib, bins, alpha=0.6, color="tab:blue", label="library")
        ax.hist(non, bins, alpha=0.6, color="tab:gray", label="not in library")
        ax.axvline(calibration["evidence_threshold"][str(n_seg)], color="k", ls="--",
                   label=f"threshold ({100 * calibration['target_fpr']:g} % FPR)")  # fmt: skip
        ax.set_title(f"{length_s:g} s query ({n_seg} segments)", fontsize=9)
        ax.set_xlabel("evidence", fontsize=8)
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


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
    parser.add_argument("--tracks", type=int, default=0,
                        help="cut library queries from N test/val tracks only")  # fmt: skip
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--bank", default="corpus/degradations.npz")
    parser.add_argument("--distractors", choices=("resampled", "train", "none"),
                        default=EvalConfig.distractors,
                        help="database distractors: the train split and its copies at 0.95x "
                             "and 1.05x speed (default), the train split, or none")  # fmt: skip
    parser.add_argument("--write-checkpoint", action="store_true",
                        help="store the results and calibration inside the checkpoint")  # fmt: skip


def run_eval(args: argparse.Namespace) -> int:
    cfg = EvalConfig(checkpoint=args.checkpoint, corpus=args.corpus, bank=args.bank,
                     out_dir=args.out, seed=args.seed, queries=args.queries,
                     nonlibrary_queries=args.nonlibrary_queries, tracks=args.tracks,
                     distractors=args.distractors)  # fmt: skip
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
