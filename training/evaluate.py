"""The evaluation harness (both papers' protocol): `nfp eval --checkpoint C [--out DIR] [--seed S]`.

Database: fingerprints of the corpus's test tracks, plus the train tracks as distractors (so the
search runs over ~9 h of music, not a handful of tracks). Queries of 1, 2, 3, 5, 6 and 10 s are
cut at random offsets from test tracks and degraded at the low / mid / high levels of
degrade.LEVELS, with the "eval" half of the degradation bank (noise, voices and rooms the model
never heard). Top-1 hit rates:

- exact: right track, and the matched start segment is the one nearest the true start;
- near: right track, start within ±1 segment (±0.5 s);
- song: right track.

Non-library queries come from the val tracks, which are not in the database: the val tracks are
split in two by track; the first half calibrates, per query length, the evidence threshold at
which 1 % of non-library queries would pass; the second half measures the false-positive rate at
the app's confidence threshold with that calibration. The calibration is returned (and written
into the checkpoint with --write-checkpoint) in the form engine.search expects, together with the
background fingerprints its noise floor was measured with (engine.search.noise_floor): a sample
of the train tracks, leaving out the packages the tests and benchmarks play.

Everything is drawn from one seed, so a rerun gives the same numbers.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from engine.audio import HOP_S, HOP_SAMPLES, SAMPLE_RATE, count_segments, frame_segments
from engine.checkpoint import Checkpoint, load_checkpoint
from engine.fingerprint import Fingerprinter
from engine.index import VectorIndex
from engine.search import (
    BACKGROUND_ROWS,
    CONFIDENCE_THRESHOLD,
    TOP_K,
    SegmentMap,
    confidence_from_evidence,
    match_sequence,
    noise_floor,
)
from engine.torch_backend import load_torch, save_checkpoint
from training.corpus import load_manifest
from training.degrade import LEVELS, Sources, degrade

QUERY_LENGTHS_S = (1.0, 2.0, 3.0, 5.0, 6.0, 10.0)
TARGET_FPR = 0.01  # calibrated false-positive rate on non-library music
CONTEXT_S = 0.5  # audio before each query that feeds its reverb tail
REPEAT_CORR = 0.9  # clean-audio correlation above which two places of a track are one repeat
QUERY_CHUNK = 64  # queries degraded and fingerprinted together (bounds the FFT memory)


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str
    corpus: str = "corpus"
    bank: str = "corpus/degradations.npz"
    out_dir: str = ""  # results.json and PNGs; "" writes nothing
    seed: int = 0
    queries: int = 200  # library queries per (level, length); non-library queries per half
    tracks: int = 0  # use only this many test tracks as queries (0: all)
    distractors: str = "train"  # "train": add the train split to the database; "none"
    levels: tuple[str, ...] = ("low", "mid", "high")
    lengths_s: tuple[float, ...] = QUERY_LENGTHS_S
    # The end-to-end tests and benchmarks play Wesnoth tracks as music a user does or does not
    # own; a background that knew them would make the "not in my library" checks easy.
    background_excludes: tuple[str, ...] = ("wesnoth-1.16-music",)


@dataclass
class QuerySet:
    """Degraded queries of one length and level with ground truth; audio float32 (Q, n)."""

    level: str
    length_s: float
    track: np.ndarray  # int64 (Q,): index into the list of tracks the queries were cut from
    start_s: np.ndarray  # float64 (Q,): true start of the query inside that track
    audio: np.ndarray  # float32 (Q, context + n)


@dataclass
class Outcome:
    """Per-query results of one QuerySet (arrays of length Q)."""

    level: str
    length_s: float
    n_segments: int
    kind: str  # "library", "calibration" or "fpr"
    found_track: np.ndarray  # int64, -1 where no match
    true_track: np.ndarray  # int64, database track index (-1 for non-library)
    true_segment: np.ndarray  # int64, segment nearest the true start
    start_segment: np.ndarray  # int64
    offset_s: np.ndarray
    true_start_s: np.ndarray
    evidence: np.ndarray
    score: np.ndarray
    repeat: np.ndarray | None = None  # bool: wrong offset, but the music there is the same


def evaluate(
    cfg: EvalConfig, *, progress: Callable[[str], None] | None = None
) -> tuple[dict, np.ndarray]:
    """Run the whole protocol; returns the evaluation dict (also written to out_dir if set) and
    the background fingerprints (B, d) its calibration was measured with."""
    say = progress or (lambda _msg: None)
    started = time.time()
    checkpoint = load_checkpoint(cfg.checkpoint)
    fingerprinter = Fingerprinter(checkpoint)
    db_tracks, query_tracks, held_out = load_tracks(cfg)
    hours = sum(map(len, db_tracks)) / SAMPLE_RATE / 3600
    say(f"database: {len(db_tracks)} tracks, {hours:.2f} h")
    index, segments = build_database(fingerprinter, db_tracks)
    background = build_background(fingerprinter, cfg)
    sources = Sources.load(cfg.bank, "eval")
    outcomes = []
    for li, level in enumerate(cfg.levels):
        for qi, length_s in enumerate(cfg.lengths_s):
            say(f"queries: {level}, {length_s:g} s")
            for ki, (kind, tracks) in enumerate(
                (("library", query_tracks), ("calibration", held_out[0]), ("fpr", held_out[1]))
            ):
                rng = np.random.default_rng([cfg.seed, li, qi, ki])
                queries = make_queries(tracks, level, length_s, cfg.queries, sources, rng)
                out = run_queries(queries, kind, fingerprinter, index, segments, background)
                if kind == "library":
                    out.repeat = find_repeats(out, tracks)
                outcomes.append(out)
    result = summarize(outcomes, cfg, checkpoint, hours, time.time() - started)
    if cfg.out_dir:
        write_outputs(result, outcomes, Path(cfg.out_dir))
    return result, background


def load_tracks(
    cfg: EvalConfig,
) -> tuple[list[np.ndarray], list[np.ndarray], tuple[list[np.ndarray], list[np.ndarray]]]:
    """Database tracks (test first, then distractors), query tracks, and the two held-out halves.

    Query track i is database track i. Audio float32 (n,) each.
    """
    manifest = sorted(load_manifest(cfg.corpus), key=lambda t: (t.key, t.path))
    corpus = Path(cfg.corpus)

    def audio(split: str) -> list[np.ndarray]:
        return [np.load(corpus / t.path).astype(np.float32) for t in manifest if t.split == split]

    test = audio("test")
    if not test:
        raise ValueError(f"{corpus}/manifest.json: no test tracks")
    queries = test[: cfg.tracks] if cfg.tracks > 0 else test
    distractors = audio("train") if cfg.distractors == "train" else []
    val = audio("val")
    if len(val) < 2:
        raise ValueError(f"{corpus}/manifest.json: need at least 2 val tracks for calibration")
    return test + distractors, queries, (val[0::2], val[1::2])


def build_database(
    fingerprinter: Fingerprinter, tracks: Sequence[np.ndarray]
) -> tuple[VectorIndex, SegmentMap]:
    """Fingerprint every track into one index; track i of the SegmentMap is tracks[i]."""
    fps = [fingerprinter.audio(t) for t in tracks]
    segments = SegmentMap.from_lengths([len(f) for f in fps])
    return VectorIndex.build(np.concatenate(fps)), segments


def build_background(fingerprinter: Fingerprinter, cfg: EvalConfig) -> np.ndarray:
    """BACKGROUND_ROWS fingerprints float32 (B, d) drawn at random (cfg.seed) from the train
    tracks outside cfg.background_excludes."""
    corpus = Path(cfg.corpus)
    tracks = [t for t in sorted(load_manifest(cfg.corpus), key=lambda t: (t.key, t.path))
              if t.split == "train" and t.package not in cfg.background_excludes]  # fmt: skip
    if not tracks:
        raise ValueError(f"{corpus}/manifest.json: no train tracks for the background")
    fps = np.concatenate(
        [fingerprinter.audio(np.load(corpus / t.path).astype(np.float32)) for t in tracks]
    )
    rng = np.random.default_rng([cfg.seed, len(fps)])
    return fps[rng.choice(len(fps), min(BACKGROUND_ROWS, len(fps)), replace=False)]


def make_queries(
    tracks: Sequence[np.ndarray],
    level: str,
    length_s: float,
    n_queries: int,
    sources: Sources,
    rng: np.random.Generator,
) -> QuerySet:
    """n_queries degraded queries at random places of tracks (uniform over usable audio)."""
    n = round(length_s * SAMPLE_RATE)
    context = int(CONTEXT_S * SAMPLE_RATE)
    usable = np.array([max(0, len(t) - context - n) for t in tracks], np.float64)
    if usable.sum() <= 0:
        raise ValueError(f"no track is longer than a {length_s:g} s query")
    track = rng.choice(len(tracks), size=n_queries, p=usable / usable.sum())
    first = (rng.random(n_queries) * usable[track]).astype(np.int64)  # context start
    audio = np.empty((n_queries, n), np.float32)
    for lo in range(0, n_queries, QUERY_CHUNK):
        rows = range(lo, min(lo + QUERY_CHUNK, n_queries))
        raw = np.stack([tracks[track[i]][first[i] : first[i] + context + n] for i in rows])
        audio[lo : lo + len(raw)] = degrade(raw, n, LEVELS[level], sources, rng)
    start_s = (first + context) / SAMPLE_RATE
    return QuerySet(level, length_s, track.astype(np.int64), start_s, audio)


def run_queries(
    queries: QuerySet,
    kind: str,
    fingerprinter: Fingerprinter,
    index: VectorIndex,
    segments: SegmentMap,
    background: np.ndarray | None = None,
) -> Outcome:
    """Fingerprint and search every query with the engine's match_sequence."""
    n_queries, n = queries.audio.shape
    n_seg = count_segments(n)
    fp = fingerprinter.segments(np.concatenate([frame_segments(q) for q in queries.audio]))
    scores, ids = index.search(fp, min(TOP_K, len(index)))
    floor = noise_floor(fp, scores, background).reshape(n_queries, n_seg)
    fp, scores, ids = (a.reshape(n_queries, n_seg, -1) for a in (fp, scores, ids))
    found = np.full(n_queries, -1, np.int64)
    start = np.full(n_queries, -1, np.int64)
    offset_s, evidence, score = (np.zeros(n_queries) for _ in range(3))
    for q in range(n_queries):
        match = match_sequence(
            fp[q], index, segments, neighbours=(scores[q], ids[q]), floor=floor[q]
        )
        if match is not None:
            found[q], start[q], offset_s[q] = match.track, match.start_segment, match.offset_s
            evidence[q], score[q] = match.evidence, match.score
    library = kind == "library"
    return Outcome(
        level=queries.level,
        length_s=queries.length_s,
        n_segments=n_seg,
        kind=kind,
        found_track=found,
        true_track=queries.track if library else np.full(n_queries, -1, np.int64),
        true_segment=np.round(queries.start_s / HOP_S).astype(np.int64),
        start_segment=start,
        offset_s=offset_s,
        true_start_s=queries.start_s,
        evidence=evidence,
        score=score,
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
    shift_s = (outcome.start_segment - outcome.true_segment) * HOP_S
    right_track = outcome.found_track == outcome.true_track
    n = round(min(outcome.length_s, 3.0) * SAMPLE_RATE)
    lag = HOP_SAMPLES // 2
    for q in np.flatnonzero(right_track & (outcome.start_segment != outcome.true_segment)):
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


def calibrate(outcomes: Sequence[Outcome], target_fpr: float = TARGET_FPR) -> dict:
    """Evidence thresholds per query length (in segments) passing target_fpr of the calibration
    half's non-library queries, pooled over levels: {"evidence_threshold": {"n": value}}."""
    table = {}
    for n_seg in sorted({o.n_segments for o in outcomes}):
        ev = np.concatenate(
            [o.evidence for o in outcomes if o.kind == "calibration" and o.n_segments == n_seg]
        )
        # Strictly above the (1 - fpr) quantile; never zero, or every query would pass.
        table[str(n_seg)] = max(float(np.quantile(ev, 1 - target_fpr, method="higher")), 1e-3)
    return {"evidence_threshold": table, "target_fpr": target_fpr}


def accepted(outcome: Outcome, calibration: dict) -> np.ndarray:
    """Which queries the app would report (confidence >= CONFIDENCE_THRESHOLD), bool (Q,)."""
    conf = np.array(
        [confidence_from_evidence(e, outcome.n_segments, calibration) for e in outcome.evidence]
    )
    return (conf >= CONFIDENCE_THRESHOLD) & (outcome.found_track >= 0)


def hit_rates(outcome: Outcome, calibration: dict) -> dict[str, float]:
    """Top-1 exact / near / song rates of library queries, and song among confident answers."""
    song = outcome.found_track == outcome.true_track
    delta = np.abs(outcome.start_segment - outcome.true_segment)
    return {
        "exact": float(np.mean(song & (delta == 0))),
        "near": float(np.mean(song & (delta <= 1))),
        "song": float(np.mean(song)),
        # exact, or a wrong segment holding the same music (a loop): the best any system can do
        "exact_or_repeat": float(np.mean(song & ((delta == 0) | outcome.repeat))),
        "song_confident": float(np.mean(song & accepted(outcome, calibration))),
        # Median |offset_s - true start| of right-track answers; None when there are none.
        "offset_error_s": float(np.median(np.abs(outcome.offset_s - outcome.true_start_s)[song]))
        if song.any()
        else None,
    }


def summarize(
    outcomes: Sequence[Outcome],
    cfg: EvalConfig,
    checkpoint: Checkpoint,
    database_hours: float,
    wall_s: float,
) -> dict:
    """The evaluation dict stored in checkpoints and results.json."""
    calibration = calibrate(outcomes)
    rates: dict[str, dict[str, dict[str, float]]] = {}
    fpr: dict[str, dict[str, float]] = {}
    for o in outcomes:
        key = f"{o.length_s:g}"
        if o.kind == "library":
            rates.setdefault(o.level, {})[key] = hit_rates(o, calibration)
        elif o.kind == "fpr":
            fpr.setdefault(o.level, {})[key] = float(np.mean(accepted(o, calibration)))
    fpr_all = [accepted(o, calibration) for o in outcomes if o.kind == "fpr"]
    return {
        "calibration": calibration,
        "hit_rates": rates,
        "false_positive_rate": fpr,
        "false_positive_rate_all": float(np.mean(np.concatenate(fpr_all))),
        "false_positive_rate_swapped": swapped_halves_fpr(outcomes),
        "protocol": {
            **{k: v for k, v in asdict(cfg).items() if k != "out_dir"},
            "levels_defined": {name: asdict(LEVELS[name]) for name in cfg.levels},
            "database_hours": round(database_hours, 3),
            "confidence_threshold": CONFIDENCE_THRESHOLD,
        },
        "checkpoint_sha256": checkpoint.sha256,
        "wall_time_s": round(wall_s, 1),
    }


def swapped_halves_fpr(outcomes: Sequence[Outcome]) -> float:
    """The false-positive rate with the held-out halves' roles swapped (calibrate on the second,
    measure on the first): with a handful of tracks per half, how far the two disagree shows how
    much the one number depends on which tracks landed in which half."""
    roles = {"calibration": "fpr", "fpr": "calibration"}
    swapped = [replace(o, kind=roles.get(o.kind, o.kind)) for o in outcomes]
    calibration = calibrate(swapped)
    return float(np.mean(np.concatenate([accepted(o, calibration)
                                         for o in swapped if o.kind == "fpr"])))  # fmt: skip


def format_table(result: dict) -> str:
    """Hit rates (%) by level and match kind against query length, then false positives."""
    lengths = list(next(iter(result["hit_rates"].values())))
    head = f"{'level':6s} {'kind':15s}" + "".join(f"{s + ' s':>8s}" for s in lengths)
    lines = [head, "-" * len(head)]
    for level, by_length in result["hit_rates"].items():
        for kind in ("exact", "exact_or_repeat", "near", "song", "song_confident"):
            cells = "".join(f"{100 * by_length[s][kind]:8.1f}" for s in lengths)
            lines.append(f"{level:6s} {kind:15s}{cells}")
    for level, by_length in result["false_positive_rate"].items():
        cells = "".join(f"{100 * by_length[s]:8.1f}" for s in lengths)
        lines.append(f"{level:6s} {'false positive':15s}{cells}")
    thresholds = result["calibration"]["evidence_threshold"]
    lines.append(f"{'':6s} {'threshold':15s}" + "".join(f"{v:8.2f}" for v in thresholds.values()))
    swapped = result["false_positive_rate_swapped"]
    lines.append(f"false-positive rate, all non-library queries: "
                 f"{100 * result['false_positive_rate_all']:.2f} % "
                 f"({100 * swapped:.2f} % with the halves swapped)")  # fmt: skip
    return "\n".join(lines)


def write_outputs(result: dict, outcomes: Sequence[Outcome], out_dir: Path) -> None:
    """results.json, table.txt, queries.npz (every query's outcome), hit_rate.png, scores.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    columns = {}
    for name in ("found_track", "true_track", "true_segment", "start_segment", "offset_s",
                 "true_start_s", "evidence", "score"):  # fmt: skip
        columns[name] = np.concatenate([getattr(o, name) for o in outcomes])
    for name in ("level", "kind", "length_s", "n_segments"):
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
        lib = np.concatenate([o.evidence for o in outcomes
                              if o.kind == "library" and o.n_segments == n_seg])  # fmt: skip
        non = np.concatenate([o.evidence for o in outcomes
                              if o.kind != "library" and o.n_segments == n_seg])  # fmt: skip
        bins = np.linspace(0, max(lib.max(), non.max(), 1e-3) * 1.02, 40)
        ax.hist(lib, bins, alpha=0.6, color="tab:blue", label="library")
        ax.hist(non, bins, alpha=0.6, color="tab:gray", label="not in library")
        ax.axvline(calibration["evidence_threshold"][str(n_seg)], color="k", ls="--",
                   label="threshold (1 % FPR)")  # fmt: skip
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
                        help="queries per level and length (default %(default)s)")  # fmt: skip
    parser.add_argument("--tracks", type=int, default=0, help="query only the first N test tracks")
    parser.add_argument("--corpus", default="corpus")
    parser.add_argument("--bank", default="corpus/degradations.npz")
    parser.add_argument("--distractors", choices=("train", "none"), default="train",
                        help="add the train split to the database (default) or not")  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--write-checkpoint", action="store_true",
                        help="store the results and calibration inside the checkpoint")  # fmt: skip


def run_eval(args: argparse.Namespace) -> int:
    cfg = EvalConfig(checkpoint=args.checkpoint, corpus=args.corpus, bank=args.bank,
                     out_dir=args.out, seed=args.seed, queries=args.queries, tracks=args.tracks,
                     distractors=args.distractors)  # fmt: skip
    if args.threads > 0:
        torch.set_num_threads(args.threads)
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
