"""The track database of a library: one SQLite file with the tracks and the library's records.

Readers open it read-only (`mode=ro`), so `nfp identify` and `nfp info` work on a library they
may not write to and never change it. Every SQLite failure surfaces as an NfpError naming the
file: IndexCorruptError for a damaged file, NfpError for one that cannot be opened or written.

Paths are stored losslessly: as TEXT when they are UTF-8, else as the file system's bytes (a
BLOB in the same column; SQLite columns are dynamically typed), so a Latin-1 file name from an
old collection is indexed like any other.

The library's records are read whole, into plain values (`Records`; with the tracks and their
checksums, `Snapshot`), once per operation: the layers above work on those values and never go
back to the database one key at a time. Never once per library: another process (an indexer)
may change the records between two operations.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from engine.core.errors import IndexCorruptError, NfpError
from engine.library.scan import display_path
from engine.model.checkpoint import MAX_D

DB_FILE = "tracks.sqlite"
LIBRARY_FORMAT = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tracks (
    id INTEGER PRIMARY KEY,
    path TEXT UNIQUE NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    content_hash TEXT NOT NULL,
    title TEXT NOT NULL,
    artist TEXT NOT NULL,
    album TEXT NOT NULL,
    duration_s REAL NOT NULL,
    first_segment INTEGER NOT NULL,
    n_segments INTEGER NOT NULL,
    rows_hash TEXT NOT NULL DEFAULT '',
    rows_version INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS skipped (path TEXT PRIMARY KEY, reason TEXT NOT NULL);
"""
TRACK_COLUMNS = "id, path, title, artist, album, duration_s, first_segment, n_segments"


@dataclass(frozen=True)
class Track:
    id: int
    path: str  # the real path (may hold undecodable bytes as surrogates; see display_path)
    title: str
    artist: str
    album: str
    duration_s: float
    first_segment: int
    n_segments: int

    @property
    def display_path(self) -> str:
        return display_path(self.path)


@dataclass(frozen=True)
class NewTrack:
    """What indexing one file adds: where it is, what it holds and which rows are its own."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    tags: dict  # title, artist, album, duration_s
    rows_hash: str
    rows_version: int  # the rules its rows were made under (engine.model.fingerprint.ROWS_VERSION)


@dataclass(frozen=True)
class Records:
    """The library's records (its meta table) as one read found them. A count that is not one,
    or a d that is no fingerprint width (a tampered record), is kept as `damage`, its cause: a
    checked read (`TrackDB.records`) refuses it, and a library that is damaged so still names
    its checkpoint and folders (which checkpoint built it, how to repair it)."""

    d: int | None  # the fingerprints' width; None before the first track
    committed_rows: int  # rows of committed tracks; any past them are a crash's leftovers
    generation: int  # which generation of row files is current
    codec: str  # "pq" once the rows are product-quantisation codes (engine.library.store)
    checkpoint_name: str | None
    checkpoint_sha256: str | None  # the checkpoint file that made the rows
    fingerprints_sha256: str | None  # its weights; None in a library made before they were kept
    checkpoint_path: str | None  # where that checkpoint lived, to find it again for queries
    folders: tuple[str, ...]  # the music folders indexed into it (none, if that record is damaged)
    damage: str | None  # why a count or d is damaged (the first such record); None: none is

    @classmethod
    def parse(cls, values: dict[str, object]) -> Records:
        """The records from the meta table's key → value."""
        counts = {k: _count(values.get(k), k) for k in ("d", "committed_rows", "generation")}
        d = counts["d"] if "d" in values else None
        if isinstance(d, int) and not 0 < d <= MAX_D:
            d = f"record d={d} is not a fingerprint width"
        damage = next((c for c in (d, *counts.values()) if isinstance(c, str)), None)
        ints = {key: c if isinstance(c, int) else 0 for key, c in counts.items()}
        return cls(
            d=d if isinstance(d, int) else None,
            committed_rows=ints["committed_rows"],
            generation=ints["generation"],
            codec=str(values.get("codec") or ""),
            checkpoint_name=values.get("checkpoint_name"),
            checkpoint_sha256=values.get("checkpoint_sha256"),
            fingerprints_sha256=values.get("fingerprints_sha256"),
            checkpoint_path=values.get("checkpoint_path"),
            folders=_folders(values.get("folders")),
            damage=damage,
        )


@dataclass(frozen=True)
class Snapshot:
    """What a reader of the library works on, read in one transaction so that all of it is of
    one moment, even while another process indexes: the records (checked), the tracks by first
    row and their rows' checksums."""

    records: Records
    tracks: list[Track]
    rows_hashes: dict[int, str]  # track id → checksum of its rows ('' or absent: none kept)


class TrackDB:
    """One library's SQLite file. Writers create it; readers open it read-only."""

    def __init__(self, path: Path, *, writable: bool) -> None:
        self.path = Path(path)
        self.writable = writable
        self._inode = _inode(self.path)  # before connecting: a swap in between reads as one
        # The connection's transaction is one for every thread using it (the app's indexing and
        # search workers share a library): one transaction at a time.
        self._transacting = threading.RLock()
        with self.guard("open"):
            if writable:
                self._db = sqlite3.connect(self.path, check_same_thread=False)
                self._db.executescript(SCHEMA)
                self._migrate()
            else:
                uri = f"file:{quote(os.fsencode(self.path.resolve()))}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            self._db.execute("SELECT COUNT(*) FROM tracks").fetchone()  # fails on a damaged file

    def close(self) -> None:
        self._db.close()

    def replaced(self) -> bool:
        """Whether another file now stands at this database's path (a rebuild swapped its new
        database in since this one was opened)."""
        return _inode(self.path) != self._inode

    @contextlib.contextmanager
    def guard(self, doing: str) -> Iterator[None]:
        """SQLite's errors as NfpErrors naming the file."""
        try:
            yield
        except sqlite3.OperationalError as e:
            raise NfpError(f"{self.path}: cannot {doing} the track database ({e})") from e
        except sqlite3.DatabaseError as e:
            raise IndexCorruptError(self.path.parent, f"{self.path.name} is damaged: {e}") from e

    def _migrate(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(tracks)")}
        if "rows_hash" not in columns:  # a library made before rows were checksummed
            self._db.execute("ALTER TABLE tracks ADD COLUMN rows_hash TEXT NOT NULL DEFAULT ''")
        if "rows_version" not in columns:  # made before versions were kept: every row a segment's
            self._db.execute(
                "ALTER TABLE tracks ADD COLUMN rows_version INTEGER NOT NULL DEFAULT 1"
            )

    # ---- records --------------------------------------------------------------------------
    def records(self, *, checked: bool = True) -> Records:
        """The library's records, in one query; `checked`: IndexCorruptError for a damaged one."""
        with self.guard("read"):
            records = Records.parse(dict(self._db.execute("SELECT key, value FROM meta")))
        if checked and records.damage:
            raise IndexCorruptError(self.path.parent, records.damage)
        return records

    def snapshot(self) -> Snapshot:
        """The records (checked), the tracks and their checksums, of one moment (see Snapshot)."""
        with self.guard("read"), self._one_moment():
            tracks = self._track_rows()
            hashes = self._rows_hashes()
            records = self.records()
        return Snapshot(records, tracks, hashes)

    def set_meta(self, **values: object) -> None:
        """Set records; call inside `transaction()` to commit them with other changes."""
        self._db.executemany(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
            [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in values.items()],
        )

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with self._transacting, self.guard("write"), self._db:
            yield

    @contextlib.contextmanager
    def _one_moment(self) -> Iterator[None]:
        """Reads that see one committed state: a read transaction, unless one is open already."""
        with self._transacting:
            if self._db.in_transaction:
                yield
                return
            self._db.execute("BEGIN")
            try:
                yield
            finally:
                self._db.commit()

    # ---- tracks ---------------------------------------------------------------------------
    def tracks(self) -> list[Track]:
        """The tracks by first row."""
        with self.guard("read"):
            return self._track_rows()

    def _track_rows(self) -> list[Track]:
        rows = self._db.execute(f"SELECT {TRACK_COLUMNS} FROM tracks ORDER BY first_segment")
        try:
            return [Track(r[0], path_from_db(r[1]), *(_text(v) for v in r[2:5]),
                          float(r[5]), int(r[6]), int(r[7])) for r in rows.fetchall()]  # fmt: skip
        except (TypeError, ValueError) as e:
            raise IndexCorruptError(self.path.parent, f"a track record is damaged: {e}") from e

    def count(self) -> tuple[int, float, int]:
        """Tracks, seconds of audio and live rows."""
        with self.guard("read"):
            return self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(duration_s), 0), COALESCE(SUM(n_segments), 0) "
                "FROM tracks"
            ).fetchone()

    def known_files(self) -> dict[str, tuple[int, int, str]]:
        """path → (size, mtime_ns, content_hash) of every track."""
        with self.guard("read"):
            rows = self._db.execute("SELECT path, size, mtime_ns, content_hash FROM tracks")
            return {path_from_db(p): (s, m, h) for p, s, m, h in rows}

    def outdated_paths(self, version: int) -> set[str]:
        """Paths of the tracks whose rows were made under rules older than `version`."""
        with self.guard("read"):
            rows = self._db.execute("SELECT path FROM tracks WHERE rows_version < ?", (version,))
            return {path_from_db(p) for (p,) in rows}

    def _rows_hashes(self) -> dict[int, str]:
        """track id → checksum of its rows ('' for a track indexed before checksums; none at
        all in a library made before them, which a reader opens without migrating it)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(tracks)")}
        if "rows_hash" not in columns:
            return {}
        return dict(self._db.execute("SELECT id, rows_hash FROM tracks"))

    def add(self, track: NewTrack, first_segment: int, n_segments: int) -> Track:
        """Insert or replace one track; call inside `transaction()`. Returns it as stored."""
        self._db.execute("DELETE FROM tracks WHERE path = ?", (path_to_db(track.path),))
        tags = track.tags
        cursor = self._db.execute(
            "INSERT INTO tracks (path, size, mtime_ns, content_hash, title, artist, album,"
            " duration_s, first_segment, n_segments, rows_hash, rows_version)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (path_to_db(track.path), track.size, track.mtime_ns, track.content_hash,
             tags["title"], tags["artist"], tags["album"], tags["duration_s"],
             first_segment, n_segments, track.rows_hash, track.rows_version),
        )  # fmt: skip
        return Track(cursor.lastrowid, track.path, tags["title"], tags["artist"], tags["album"],
                     tags["duration_s"], first_segment, n_segments)  # fmt: skip

    def skipped(self) -> list[tuple[str, str]]:
        """(path, reason) of the files the last scans skipped, by path; none in a library made
        before skips were kept."""
        with self.guard("read"):
            exists = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'skipped'"
            ).fetchone()
            if not exists:
                return []
            rows = self._db.execute("SELECT path, reason FROM skipped ORDER BY path").fetchall()
        return [(path_from_db(p), r) for p, r in rows]

    def set_skipped(self, under: Iterable[str], skipped: Iterable[tuple[str, str]]) -> None:
        """Replace the skips kept for files under the folders `under` by `skipped`."""
        with self.transaction():
            for folder in under:
                known = [p for p, _ in self.skipped() if Path(p).is_relative_to(folder)]
                self._db.executemany("DELETE FROM skipped WHERE path = ?",
                                     [(path_to_db(p),) for p in known])  # fmt: skip
            self._db.executemany("INSERT OR REPLACE INTO skipped (path, reason) VALUES (?, ?)",
                                 [(path_to_db(p), r) for p, r in skipped])  # fmt: skip

    def remove(self, paths: Iterable[str]) -> None:
        with self.transaction():
            self._db.executemany("DELETE FROM tracks WHERE path = ?",
                                 [(path_to_db(p),) for p in paths])  # fmt: skip

    def move(self, old: str, new: str, size: int, mtime_ns: int) -> None:
        with self.transaction():
            self._db.execute("UPDATE tracks SET path = ?, size = ?, mtime_ns = ? WHERE path = ?",
                             (path_to_db(new), size, mtime_ns, path_to_db(old)))  # fmt: skip

    def set_first_segments(self, firsts: Iterable[tuple[int, int]]) -> None:
        """(first_segment, track id) pairs; call inside `transaction()`."""
        self._db.executemany("UPDATE tracks SET first_segment = ? WHERE id = ?", list(firsts))

    def set_rows_hashes(self, hashes: Iterable[tuple[str, int]]) -> None:
        """(rows_hash, track id) pairs; call inside `transaction()`."""
        self._db.executemany("UPDATE tracks SET rows_hash = ? WHERE id = ?", list(hashes))


def path_to_db(path: str) -> str | bytes:
    """A path as SQLite can store it without loss: text if UTF-8, else the raw bytes."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return os.fsencode(path)
    return path


def path_from_db(value: str | bytes) -> str:
    return os.fsdecode(value) if isinstance(value, bytes) else value


def _count(value: object, key: str) -> int | str:
    """A count kept in the records (0 where there is none), or why it is not one."""
    if value is None:
        return 0
    try:
        number = int(value)
    except ValueError:
        number = -1
    return number if number >= 0 else f"record {key}={value!r} is not a count"


def _folders(value: object) -> tuple[str, ...]:
    """The folders record; a damaged one only costs repair messages their folder names."""
    try:
        folders = [] if value is None else json.loads(value)
    except (TypeError, ValueError):
        return ()
    return tuple(f for f in folders if isinstance(f, str)) if isinstance(folders, list) else ()


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _inode(path: Path) -> int | None:
    try:
        return path.stat().st_ino
    except OSError:
        return None
