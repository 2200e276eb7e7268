"""Catalogues: one or more libraries (shards) searched as one.

A query is answered in two rounds, so that each shard only ever touches its own rows:

1. every shard returns its top-k neighbours of each query segment; the merged top-k is exactly
   what one library holding every shard would return, and so is the noise floor taken from it;
2. every shard aligns the query with the candidates the merged top-k proposes in its rows, under
   that shared floor, and returns its best alignment; the catalogue keeps the best of those.

An alignment never crosses a track, and a track lives in one shard, so the answer equals one
library's (tests/test_shards.py). Shards in this process are searched one after the other
(threads searching shards side by side fought over the cores when each search used every core:
690 ms for two 150,000-row shards against 74 ms in turn; a search now runs on one thread,
engine.core.threads, and searching shards side by side was not measured again); shards held
by Dask workers, each opening and holding one shard, are searched in parallel.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from engine.core.audio import check_regular_file
from engine.core.errors import NfpError
from engine.library.binding import check_checkpoint
from engine.library.index import VectorIndex
from engine.library.library import Library
from engine.library.rebuild import read_library
from engine.library.searching import search_index
from engine.library.segments import SegmentMap
from engine.library.tracks import Track
from engine.model.checkpoint import Checkpoint
from engine.query.search import SequenceMatch, match_sequence

MAX_CATALOGUE_BYTES = 1 << 20  # a catalogue lists directories: a thousand of them is ≈ 100 KiB
Searched = tuple[VectorIndex, SegmentMap, list[Track]]  # what search_index(library) returns


@dataclass(frozen=True)
class Alignment:
    """How a shard scores candidates: engine.model.scoring's constants and the checkpoint's
    thresholds."""

    top_k: int
    min_coverage: float
    calibration: dict[str, Any] | None
    other_music_floor: bool = False


class Shard:
    """One library's search index, row map and tracks, answering the two rounds of a search."""

    def __init__(self, index: VectorIndex, segments: SegmentMap, tracks: list[Track]) -> None:
        self.index, self.segments, self.tracks = index, segments, tracks

    def __len__(self) -> int:
        return len(self.index)

    def track_list(self) -> list[Track]:
        return self.tracks

    def search(self, fp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, ids), each (L, k), of fingerprints (L, d) among this shard's rows."""
        return self.index.search(fp, min(k, len(self.index)))

    def best(
        self,
        fp: np.ndarray,
        neighbours: tuple[np.ndarray, np.ndarray],
        floor: np.ndarray,
        usable: np.ndarray,
        alignment: Alignment,
    ) -> SequenceMatch | None:
        """The best alignment of fingerprints (L, d) among the starts that the catalogue's
        neighbours (scores, ids), each (L, k), propose (ids: this shard's rows; -1 for another
        shard's or none), scored over floor (L,) on the usable (L,) segments."""
        return match_sequence(
            fp,
            self.index,
            self.segments,
            k=alignment.top_k,
            min_coverage=alignment.min_coverage,
            calibration=alignment.calibration,
            neighbours=neighbours,
            usable=usable,
            floor=floor,
            other_music_floor=alignment.other_music_floor,
        )

    def similarity(self, fp: np.ndarray, track: int, positions: np.ndarray) -> np.ndarray:
        """Inner products (n,) of fingerprints (n, d) with the track's segments at positions
        (n,); -inf where a position lies outside the track."""
        first, length = self.segments.first[track], self.segments.length[track]
        inside = (positions >= 0) & (positions < length)
        rows = first + np.where(inside, positions, 0)
        sims = np.einsum("nd,nd->n", fp, np.asarray(self.index.vectors[rows], np.float32))
        return np.where(inside, sims, -np.inf).astype(np.float32)


class LibraryShard(Shard):
    """A shard opened from its library directory, read-only (what a Dask worker holds)."""

    def __init__(self, db_dir: str | Path) -> None:
        super().__init__(*read_library(db_dir, search_index))


class Catalogue:
    """Shards searched as one library; track numbers run through the shards in order."""

    def __init__(self, shards: Sequence[Shard | RemoteShard], names: Sequence[str] = ()) -> None:
        if not shards:
            raise NfpError("a catalogue needs at least one library")
        self.shards = list(shards)
        self.names = list(names) or [f"shard {i}" for i in range(len(shards))]
        per_shard = [s.track_list() for s in self.shards]
        self.tracks: list[Track] = [t for tracks in per_shard for t in tracks]
        self.track_base = np.cumsum([0, *map(len, per_shard)])
        self.row_base = np.cumsum([0, *map(len, self.shards)])
        remote = sum(isinstance(s, RemoteShard) for s in self.shards)
        self._pool = (  # threads that wait on workers, to ask all of them at once
            concurrent.futures.ThreadPoolExecutor(remote, thread_name_prefix="nfp-shard")
            if remote > 1
            else None
        )

    @classmethod
    def of_searched(cls, searched: Searched) -> Catalogue:
        return cls([Shard(*searched)])

    @classmethod
    def open(
        cls, db_dirs: Sequence[Path], checkpoint: Checkpoint, *, client: Any = None
    ) -> Catalogue:
        """The libraries at db_dirs, each checked against the checkpoint; with a Dask client
        each is opened and held by one of its workers (they must see the same paths). A
        library named twice is searched once: its copies would fill every top-k with the same
        rows and leave no floor to tell a match by."""
        db_dirs = _distinct(db_dirs)
        for db_dir in db_dirs:
            with Library(db_dir, writable=False) as library:
                check_checkpoint(library, checkpoint)
        names = [str(d) for d in db_dirs]
        if client is None:
            return cls([LibraryShard(d) for d in db_dirs], names)
        return cls([RemoteShard(client, d) for d in db_dirs], names)

    def __len__(self) -> int:
        return int(self.row_base[-1])

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()

    def _each(self, call: Callable[[Shard | RemoteShard], Any]) -> list[Any]:
        if self._pool is None:
            return [call(s) for s in self.shards]
        return list(self._pool.map(call, self.shards))

    def search(self, fp: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The catalogue's top-k (scores, row ids), each (L, k), of fingerprints (L, d)."""
        found = self._each(lambda s: s.search(fp, k))
        return merge_top_k(found, self.row_base[:-1], k)

    def best(
        self,
        fp: np.ndarray,
        neighbours: tuple[np.ndarray, np.ndarray],
        floor: np.ndarray,
        usable: np.ndarray,
        alignment: Alignment,
    ) -> SequenceMatch | None:
        """The best alignment over all shards of fingerprints (L, d), among the starts that
        the catalogue's neighbours (scores, ids), each (L, k), propose; its track numbers the
        catalogue's."""
        scores, ids = neighbours

        def shard_best(n: int) -> SequenceMatch | None:
            lo, hi = self.row_base[n], self.row_base[n + 1]
            own = np.where((ids >= lo) & (ids < hi), ids - lo, -1)
            if not (own >= 0).any():
                return None
            found = self.shards[n].best(fp, (scores, own), floor, usable, alignment)
            return found and replace(found, track=found.track + int(self.track_base[n]))

        if self._pool is None:
            found = [shard_best(n) for n in range(len(self.shards))]
        else:
            found = list(self._pool.map(shard_best, range(len(self.shards))))
        found = [f for f in found if f is not None]
        # The order match_sequence picks by within one library: evidence, then closeness.
        return max(found, key=lambda f: (f.evidence, f.score), default=None)

    def similarity(self, fp: np.ndarray, track: int, positions: np.ndarray) -> np.ndarray:
        """Inner products (n,) of fingerprints (n, d) with the catalogue track's segments at
        positions (n,) in it; -inf outside the track."""
        n = int(np.searchsorted(self.track_base, track, side="right") - 1)
        return self.shards[n].similarity(fp, track - int(self.track_base[n]), positions)


class RemoteShard:
    """A shard held by a Dask worker (a Dask actor): a Shard's calls, answered there."""

    CALLS = ("track_list", "search", "best", "similarity")

    def __init__(self, client: Any, db_dir: Path) -> None:
        self.actor = client.submit(LibraryShard, str(db_dir), actor=True).result()
        self.n_rows = self.actor.__len__().result()

    def __len__(self) -> int:
        return self.n_rows

    def __getattr__(self, name: str) -> Callable[..., Any]:
        if name not in self.CALLS:
            raise AttributeError(name)
        call = getattr(self.actor, name)
        return lambda *args: call(*args).result()


def merge_top_k(
    found: Iterable[tuple[np.ndarray, np.ndarray]], bases: Sequence[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Each shard's (scores, ids), each (L, k_i), merged into the best k, (L, k) each: ids
    become catalogue rows (shard base + row); a missing neighbour is -1 with score -inf."""
    scores, ids = [], []
    for (s, i), base in zip(found, bases, strict=True):
        scores.append(s)
        ids.append(np.where(i >= 0, i + base, -1))
    scores, ids = np.concatenate(scores, axis=1), np.concatenate(ids, axis=1)
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)


def _distinct(db_dirs: Sequence[Path]) -> list[Path]:
    """The directories in order, each library once however it is spelled."""
    seen: dict[Path, Path] = {}
    for db_dir in db_dirs:
        seen.setdefault(Path(db_dir).expanduser().resolve(), db_dir)
    return list(seen.values())


def read_catalogue(path: Path) -> list[Path]:
    """The shard directories a catalogue file lists, one per line, relative to the file;
    blank lines and lines starting with # are left out."""
    try:
        check_regular_file(Path(path))  # a FIFO would block, /dev/zero would never end
        with open(path, "rb") as f:
            data = f.read(MAX_CATALOGUE_BYTES + 1)
        if len(data) > MAX_CATALOGUE_BYTES:
            raise ValueError(f"over {MAX_CATALOGUE_BYTES // 1024} KiB: not a list of libraries")
        lines = data.decode("utf-8").splitlines()
    except (OSError, ValueError) as e:  # UnicodeDecodeError is a ValueError
        raise NfpError(f"{path}: cannot read the catalogue ({e})") from e
    dirs = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not dirs:
        raise NfpError(f"{path}: the catalogue lists no library")
    return [(Path(path).parent / d).expanduser() for d in dirs]
