"""What the evaluation harness measures: its settings (EvalConfig), the query lengths, the
library domains and non-library parts, the stretch cell, and every set of queries it draws
(query_cells), each with its own seed so a rerun gives the same numbers."""

from __future__ import annotations

from dataclasses import dataclass

from engine.model.scoring import ROOM_ROWS

QUERY_LENGTHS_S = (1.0, 2.0, 3.0, 5.0, 6.0, 10.0)
NONLIBRARY = ("nonlibrary-a", "nonlibrary-b")  # calibrate on the first, measure on the second
DOMAINS = ("unseen", "in-domain")  # library queries: never-trained packages, held-out tracks
# A room with no music playing (a phone listening before the music starts): the eval bank's noise
# and voices alone. Measured for false positives, never calibrated on.
NO_MUSIC = "no-music"
# The stretch cell: tempo changes (pitch kept) of unseen-package queries at one level.
STRETCH_TEMPOS = (0.95, 0.98, 1.02, 1.05)
STRETCH_LENGTHS_S = (2.0, 5.0, 10.0)
STRETCH_LEVEL = "mid"


@dataclass(frozen=True)
class EvalConfig:
    checkpoint: str
    corpus: str = "corpus"
    bank: str = "corpus/degradations.npz"
    out_dir: str = ""  # results.json and PNGs; "" writes nothing
    seed: int = 0
    queries: int = 200  # library queries per (level, length)
    nonlibrary_queries: int = 200  # non-library queries per (level, length) in each part
    no_music_queries: int = 100  # queries of a room with no music per (level, length)
    tracks: int = 0  # cut library queries from only this many test/val tracks (0: all)
    distractors: str = "resampled"  # "resampled": train + its copies; "train"; "none"
    levels: tuple[str, ...] = ("low", "mid", "high")
    lengths_s: tuple[float, ...] = QUERY_LENGTHS_S
    stretch_tempos: tuple[float, ...] = STRETCH_TEMPOS  # () leaves the stretch cell out
    stretch_lengths_s: tuple[float, ...] = STRETCH_LENGTHS_S
    # The end-to-end tests and benchmarks play Wesnoth tracks as music a user does or does not
    # own; a background that knew them would make the "not in my library" checks easy.
    background_excludes: tuple[str, ...] = ("wesnoth-1.16-music",)
    room_rows: int = ROOM_ROWS  # background rows of rooms with no music (0: music only)


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
    """Every query set of the protocol: each level and length in every domain, non-library
    part and the room with no music, then the stretch cell (unseen domain, STRETCH_LEVEL)."""
    kinds = [(k, cfg.queries) for k in DOMAINS] + [(p, cfg.nonlibrary_queries) for p in NONLIBRARY]
    kinds += [(NO_MUSIC, cfg.no_music_queries)] if cfg.no_music_queries else []
    cells = [Cell(kind, level, length_s, 1.0, count, (cfg.seed, li, qi, ki))
             for li, level in enumerate(cfg.levels)
             for qi, length_s in enumerate(cfg.lengths_s)
             for ki, (kind, count) in enumerate(kinds)]  # fmt: skip
    cells += [Cell("unseen", STRETCH_LEVEL, length_s, tempo, cfg.queries,
                   (cfg.seed, 100, qi, round(1000 * tempo)))
              for qi, length_s in enumerate(cfg.stretch_lengths_s)
              for tempo in cfg.stretch_tempos]  # fmt: skip
    return cells
