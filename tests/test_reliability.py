"""The bad-input sweep of the reliability issue, as tests: damaged libraries, bad files in a
music folder, concurrent and interrupted runs. Every case asserts the exit status, a one-line
message without a traceback and, where a library was there before, that it is all still there.
docs/reliability.md maps each promise to the test here that proves it."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.core.audio import SAMPLE_RATE, count_segments
from engine.library import integrity, searching
from engine.library.library import Library
from engine.library.rebuild import read_library
from engine.library.scan import display_path
from engine.library.searching import search_index
from engine.library.store import LOCK_FILE, REBUILD_DB
from engine.model.fingerprint import Fingerprinter
from tests.support.audio_files import music_like, write_audio
from tests.support.library_helpers import (
    nfp,
    one_line_error,
    rows_file,
    run_frozen,
    tamper_meta,
    tracks_of,
)

LATIN1_NAME = b"caf\xe9 del mar.wav"  # not UTF-8: an old Latin-1 collection


# ---- damaged libraries -----------------------------------------------------------------------
def scribble_on_rows(db: Path) -> None:
    """Random bytes in the middle of the stored fingerprints."""
    path = rows_file(db)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = np.random.default_rng(7).bytes(4096)
    path.write_bytes(bytes(data))


def cut_rows(db: Path) -> None:
    path = rows_file(db)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def garble_track_db(db: Path) -> None:
    (db / "tracks.sqlite").write_bytes(np.random.default_rng(3).bytes(8192))


DAMAGE = {
    "random bytes in the rows": (scribble_on_rows, "damaged", "nfp index "),
    "rows cut short": (cut_rows, "missing", "nfp index "),
    "committed_rows tampered": (
        tamper_meta("committed_rows", "lots"),
        "is not a count",
        "--rebuild",
    ),
    "d tampered": (tamper_meta("d", "-3"), "is not a count", "--rebuild"),
    "generation tampered": (tamper_meta("generation", "x"), "is not a count", "--rebuild"),
    "track database garbled": (garble_track_db, "is damaged", "--rebuild"),
}


@pytest.mark.parametrize("command", ["identify", "info"])
@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_library_is_one_line_naming_the_repair(db, query, capsys, case, command):
    damage, cause, repair = DAMAGE[case]
    damage(db)
    args = ("identify", query) if command == "identify" else ("info",)
    assert nfp(*args, "--db", db) == 1
    one_line_error(capsys, str(db), cause, "repair it with: nfp index ", repair)


def test_rows_checked_once_are_checked_again_only_once_they_change(db, query, capsys, monkeypatch):
    monkeypatch.setattr(integrity, "RACY_S", 0.0)  # the fixture's rows were written just now
    checks = []
    check = searching.rows_damage
    monkeypatch.setattr(
        searching, "rows_damage", lambda *a, **k: checks.append(a) or check(*a, **k)
    )
    for _ in range(3):
        assert nfp("identify", query, "--db", db, "--json") == 0
    assert len(checks) == 1
    scribble_on_rows(db)
    assert nfp("identify", query, "--db", db) == 1
    one_line_error(capsys, str(db), "damaged", "repair it with: nfp index ")
    assert len(checks) == 2


def test_rows_written_within_a_clock_tick_are_checked_on_every_load(db, query, monkeypatch):
    checks = []
    check = searching.rows_damage
    monkeypatch.setattr(
        searching, "rows_damage", lambda *a, **k: checks.append(a) or check(*a, **k)
    )
    now = os.stat(rows_file(db)).st_mtime
    os.utime(rows_file(db), (now, now))  # written now, as far as the clock can tell
    for _ in range(2):
        assert nfp("identify", query, "--db", db, "--json") == 0
    assert len(checks) == 2


@pytest.mark.parametrize("damage", [scribble_on_rows, cut_rows])
def test_the_named_command_repairs_damaged_rows(db, music, query, capsys, damage):
    damage(db)
    assert nfp("info", "--db", db) == 1
    repair = one_line_error(capsys).split("repair it with: ")[1]
    assert nfp(*repair.split()[1:]) == 0
    assert "repaired" in capsys.readouterr().out
    assert nfp("info", "--db", db) == 0
    assert nfp("identify", query, "--db", db, "--json") == 0
    assert '"title": "Two"' in capsys.readouterr().out


def test_a_garbled_track_database_is_rebuilt_without_being_read(db, music, query, capsys):
    garble_track_db(db)
    assert nfp("index", music, "--db", db, "--rebuild") == 0
    assert nfp("identify", query, "--db", db, "--json") == 0
    assert '"title": "Two"' in capsys.readouterr().out


def test_readers_write_nothing(db, query, capsys):
    """identify and info on a library: not one file created, changed or removed."""
    before = {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in db.iterdir()}
    assert nfp("identify", query, "--db", db) == 0
    assert nfp("info", "--db", db) == 0
    assert {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in db.iterdir()} == before


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_a_library_the_user_may_not_write_still_answers(db, query):
    """A real read-only library: owned by root, read by an unprivileged user (or, without root,
    a folder made read-only)."""
    shared = Path(os.environ.get("TMPDIR", "/tmp")) / f"nfp-ro-{os.getpid()}"
    shutil.copytree(db, shared / "db")
    shutil.copy(query, shared / query.name)
    try:
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        cmd = [sys.executable, "-m", "engine.cli", "identify", str(shared / query.name),
               "--json", "--db", str(shared / "db")]  # fmt: skip
        if os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120,
                              cwd=Path(__file__).parents[1])  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert '"title": "Two"' in done.stdout
    finally:
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(shared)


# ---- bad files in a music folder -------------------------------------------------------------
def add_fifo(music: Path) -> str:
    os.mkfifo(music / "pipe.mp3")
    return "not a regular file (a named pipe)"


def add_device_link(music: Path) -> str:
    (music / "zero.flac").symlink_to("/dev/zero")
    return "not a regular file (a character device)"


def add_garbage(music: Path) -> str:
    (music / "noise.ogg").write_bytes(np.random.default_rng(5).bytes(20000))
    return "noise.ogg: "


BAD_FILES = {"fifo": add_fifo, "link to a device": add_device_link, "garbage": add_garbage}


@pytest.mark.parametrize("case", BAD_FILES)
def test_a_bad_file_is_a_skip_reason_and_the_rest_is_indexed(db, music, capsys, case):
    reason = BAD_FILES[case](music)
    assert nfp("index", music, "--db", db) == 0
    out = capsys.readouterr().out
    assert "unchanged 3" in out and "skipped 1" in out and reason in out
    assert len(tracks_of(db)) == 3


def test_an_unexpected_error_in_one_file_is_its_skip_reason(db, music, monkeypatch, capsys):
    write_audio(music / "four.wav", music_like(12.0, SAMPLE_RATE, 9), SAMPLE_RATE)
    write_audio(music / "five.wav", music_like(12.0, SAMPLE_RATE, 10), SAMPLE_RATE)
    real = Fingerprinter.segments

    def flaky(self, segments):
        if len(segments) == count_segments(12 * SAMPLE_RATE) and flaky.calls == 0:
            flaky.calls += 1
            raise RuntimeError("oneDNN had a bad day")
        return real(self, segments)

    flaky.calls = 0
    monkeypatch.setattr(Fingerprinter, "segments", flaky)
    assert nfp("index", music, "--db", db) == 0
    out = capsys.readouterr().out
    assert "indexed 1" in out and "unexpected RuntimeError: oneDNN had a bad day" in out
    assert len(tracks_of(db)) == 4


def test_non_finite_fingerprints_never_enter_a_library(db, music, monkeypatch, capsys):
    write_audio(music / "four.wav", music_like(12.0, SAMPLE_RATE, 9), SAMPLE_RATE)
    real = Fingerprinter.segments

    def with_nan(self, segments):
        fp = real(self, segments)
        fp[::3] = np.nan
        return fp

    monkeypatch.setattr(Fingerprinter, "segments", with_nan)
    assert nfp("index", music, "--db", db) == 0
    assert "fingerprints are not finite numbers" in capsys.readouterr().out
    with Library(db, writable=False) as library:
        records = library.db.records()
        rows = np.fromfile(rows_file(db), np.float32)[: records.committed_rows * records.d]
    assert len(tracks_of(db)) == 3 and np.isfinite(rows).all()


def test_a_file_name_that_is_not_utf8_is_indexed_and_kept(db, music, tmp_path, capsys):
    name = os.fsdecode(LATIN1_NAME)
    audio = music_like(15.0, SAMPLE_RATE, 11)
    write_audio(music / name, audio, SAMPLE_RATE)
    assert nfp("index", music, "--db", db) == 0
    assert "indexed 1" in capsys.readouterr().out
    assert str(music / name) in tracks_of(db)
    assert nfp("index", music, "--db", db) == 0
    assert "unchanged 4" in capsys.readouterr().out
    excerpt = write_audio(
        tmp_path / "latin.wav", audio[3 * SAMPLE_RATE : 8 * SAMPLE_RATE], SAMPLE_RATE
    )
    assert nfp("identify", excerpt, "--db", db, "--json") == 0
    assert display_path(music / name) in capsys.readouterr().out


# ---- never lose the user's data --------------------------------------------------------------
def test_an_emptied_folder_keeps_its_tracks(db, music, tmp_path, capsys):
    """An unmounted disk leaves an empty mount point: nothing is removed, on any later run."""
    shutil.move(music, tmp_path / "elsewhere")
    music.mkdir()
    for _ in range(2):
        assert nfp("index", music, "--db", db) == 0
        out = capsys.readouterr().out
        assert "removed 0" in out and "is empty (an unmounted disk?): kept its 3 tracks" in out
    assert len(tracks_of(db)) == 3


def test_a_missing_folder_is_an_error_that_keeps_the_tracks(db, music, capsys):
    shutil.rmtree(music)
    assert nfp("index", music, "--db", db) == 1
    one_line_error(capsys, str(music), "keeps its tracks")
    assert len(tracks_of(db)) == 3


def test_an_unreadable_subfolder_keeps_its_tracks(db, music, monkeypatch, capsys):
    real = os.scandir

    def scandir(path="."):
        if Path(os.fsdecode(path)).name == "album":
            raise PermissionError(13, "Permission denied", os.fsdecode(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert nfp("index", music, "--db", db) == 0
    out = capsys.readouterr().out
    assert "removed 0" in out and "kept 2 tracks in folders that could not be read" in out
    assert len(tracks_of(db)) == 3


def test_opening_a_library_removes_no_file_it_did_not_make(db, music, query, capsys):
    mine = {name: db / name for name in ("vectors-diagram.svg", "codec-notes.txt", "README")}
    for path in mine.values():
        path.write_text("the user's")
    assert nfp("info", "--db", db) == 0
    assert nfp("identify", query, "--db", db) == 0
    assert nfp("index", music, "--db", db) == 0
    assert all(path.read_text() == "the user's" for path in mine.values())
    assert nfp("index", music, "--db", db, "--rebuild") == 1
    one_line_error(capsys, "holds files nfp did not make", "README")
    assert len(tracks_of(db)) == 3


def test_a_rebuild_while_another_nfp_indexes_is_refused_and_loses_nothing(db, music, capsys):
    with open(db / LOCK_FILE, "a") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another nfp index is writing
        assert nfp("index", music, "--db", db, "--rebuild") == 1
        one_line_error(capsys, "another nfp is indexing")
    assert len(tracks_of(db)) == 3


def test_an_interrupted_rebuild_leaves_the_old_library(db, music, query, monkeypatch, capsys):
    before = tracks_of(db)
    real = Fingerprinter.segments
    calls = []

    def interrupted(self, segments):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, segments)

    monkeypatch.setattr(Fingerprinter, "segments", interrupted)
    assert nfp("index", music, "--db", db, "--rebuild") == 130
    monkeypatch.undo()
    assert tracks_of(db) == before
    assert nfp("identify", query, "--db", db, "--json") == 0
    assert '"title": "Two"' in capsys.readouterr().out
    assert nfp("index", music, "--db", db) == 0  # the next writer clears the leftovers
    assert not (db / REBUILD_DB).exists() and len(list(db.glob("vectors-*"))) == 1


def test_a_rebuild_that_finds_no_audio_keeps_the_library(db, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert nfp("index", empty, "--db", db, "--rebuild") == 0
    assert "has no audio to index: the library was kept" in capsys.readouterr().out
    assert len(tracks_of(db)) == 3


def test_a_rebuild_replaces_the_library_in_one_step(db, music, tmp_path, capsys):
    (music / "three.ogg").unlink()
    assert nfp("index", music, "--db", db, "--rebuild") == 0
    assert [Path(p).name for p in tracks_of(db)] == ["one.flac", "two.mp3"]
    assert sorted(p.name for p in db.iterdir() if p.name.startswith("vectors-")) == [
        "vectors-1.f32"
    ]


# ---- kill -9 at chosen moments ---------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(
    ("moment", "survives"), [("rows appended", 2), ("mid-commit", 2), ("track committed", 3)]
)
def test_kill_9_mid_index_loses_at_most_the_file_in_flight(
    tmp_path, eight_tracks, capsys, moment, survives
):
    db = tmp_path / "db"
    run_frozen(tmp_path, ["index", str(eight_tracks), "--db", str(db)], moment, after=3)
    assert len(tracks_of(db)) == survives  # a reader sees only committed tracks
    assert nfp("index", eight_tracks, "--db", db) == 0  # resumes; cuts off the torn tail
    assert f"indexed {8 - survives}, unchanged {survives}" in capsys.readouterr().out
    with Library(db, writable=False) as library:
        assert len(library) == 8 and library.damaged_tracks() == []
        records = library.db.records()
        assert records.committed_rows == sum(t.n_segments for t in library.tracks())
        assert len(np.fromfile(rows_file(db), np.float32)) == records.committed_rows * records.d


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["rows appended", "track committed"])
def test_kill_9_mid_rebuild_leaves_the_old_library(db, music, query, tmp_path, capsys, moment):
    before = tracks_of(db)
    run_frozen(tmp_path, ["index", str(music), "--db", str(db), "--rebuild"], moment, after=2)
    assert tracks_of(db) == before
    assert nfp("identify", query, "--db", db, "--json") == 0
    assert '"title": "Two"' in capsys.readouterr().out
    assert nfp("index", music, "--db", db) == 0
    assert "unchanged 3" in capsys.readouterr().out
    assert not (db / REBUILD_DB).exists() and len(list(db.glob("vectors-*"))) == 1


def test_a_reader_that_a_rebuild_overtakes_reads_the_new_library(db, music, capsys):
    """A rebuild that swaps its library in while a reader is between opening the old one and
    reading its rows (which the swap removes) is not reported as damage: the reader reads the
    new library."""
    (music / "three.ogg").unlink()
    reads = []

    def read_after_a_rebuild(library: Library) -> list:
        if not reads:
            assert nfp("index", music, "--db", db, "--rebuild") == 0
        reads.append(library.db.replaced())
        return search_index(library)[2]

    tracks = read_library(db, read_after_a_rebuild)
    assert reads == [True, False]  # the first read found the old library's rows gone
    assert sorted(Path(t.path).name for t in tracks) == ["one.flac", "two.mp3"]
