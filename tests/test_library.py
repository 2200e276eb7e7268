import os
import shutil
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main as cli_main
from engine.core.audio import load_audio
from engine.core.errors import (
    EmptyLibraryError,
    IndexCorruptError,
    IndexMismatchError,
    LibraryBusyError,
    NfpError,
)
from engine.core.steps import Steps
from engine.library import parallel
from engine.library.binding import built_by
from engine.library.indexing import index_folder, remove_folder
from engine.library.library import Library
from engine.library.scan import scan_folder
from engine.library.store import VectorStore
from engine.library.tracks import Records, TrackDB
from engine.model.export import save_checkpoint
from engine.model.fingerprint import ROWS_VERSION, Fingerprinter
from engine.model.load import load_checkpoint
from engine.model.torch_backend import load_torch
from engine.query.recognize import Recognizer
from tests.support.audio_files import music_like, write_audio
from tests.support.library_helpers import nfp
from tests.support.tiny import TRACK_SECONDS, make_tiny_checkpoint


def run_update(library: Library, folder: Path, fingerprinter: Fingerprinter, **kw):
    run = Steps(index_folder(library, folder, fingerprinter, **kw))
    return list(run), run.result


def test_index_reads_tags_and_finds_every_track(music, tmp_path, tiny_checkpoint):
    fingerprinter = Fingerprinter(tiny_checkpoint)
    library = Library(tmp_path / "db")
    steps, summary = run_update(library, music, fingerprinter)
    assert (summary.indexed, len(summary.skipped), summary.removed) == (3, 0, 0)
    assert [s.done for s in steps] == [1, 2, 3] and all(s.total == 3 for s in steps)
    tracks = {t.title: t for t in library.tracks()}
    assert set(tracks) == {"One", "Two", "Three"}
    assert tracks["Two"].artist == "Test Artist" and tracks["Two"].album == "Tests"
    assert tracks["Two"].duration_s == pytest.approx(TRACK_SECONDS[1], abs=0.1)
    recognizer = Recognizer(library, tiny_checkpoint)
    audio = load_audio(music / "album" / "two.mp3")[8 * 8000 : 13 * 8000]  # 8 s … 13 s
    found = recognizer.best(recognizer.fingerprinter.audio(audio))
    assert recognizer.tracks[found.track].title == "Two"
    assert found.offset_s == pytest.approx(8.0, abs=0.5)


def test_second_run_is_incremental(music, tmp_path, tiny_checkpoint):
    fingerprinter = Fingerprinter(tiny_checkpoint)
    library = Library(tmp_path / "db")
    run_update(library, music, fingerprinter)
    rows_before = library.db.records().committed_rows
    _, again = run_update(library, music, fingerprinter)
    assert (again.indexed, again.unchanged) == (0, 3)
    assert library.db.records().committed_rows == rows_before

    write_audio(music / "four.wav", music_like(12.0, 16000, 9), 16000)  # new
    (music / "three.ogg").unlink()  # removed
    os.utime(music / "album" / "one.flac", ns=(1, 1))  # changed (mtime)
    (music / "album" / "two.mp3").rename(music / "two-moved.mp3")  # moved
    _, summary = run_update(library, music, fingerprinter)
    assert (summary.indexed, summary.removed, summary.moved) == (2, 1, 1)
    assert sorted(t.title for t in library.tracks()) == ["One", "Two", "four"]
    assert next(t for t in library.tracks() if t.title == "Two").path.endswith("two-moved.mp3")
    live = sum(t.n_segments for t in library.tracks())
    assert library.db.records().committed_rows == live  # removals were compacted away


def test_tracks_made_before_silence_was_left_out_are_fingerprinted_again(
    music, tmp_path, tiny_checkpoint, capsys
):
    """A library from before ROWS_VERSION 2 (its tracks table without the column) stored
    silent segments as ordinary rows; the next `nfp index` fingerprints its tracks again."""
    db = tmp_path / "db"
    assert cli_main(["index", str(music), "--db", str(db)]) == 0
    old = sqlite3.connect(db / "tracks.sqlite")
    with old:
        old.execute("ALTER TABLE tracks DROP COLUMN rows_version")
    old.close()
    capsys.readouterr()
    assert cli_main(["index", str(music), "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert "indexed 3, unchanged 0" in out and "fingerprinted 3 tracks again" in out
    with Library(db) as library:
        assert library.db.outdated_paths(ROWS_VERSION) == set()
    assert cli_main(["index", str(music), "--db", str(db)]) == 0
    assert "indexed 0, unchanged 3" in capsys.readouterr().out


def test_bad_files_are_reported_and_skipped(music, tmp_path, tiny_checkpoint):
    (music / "empty.mp3").write_bytes(b"")
    (music / "fake.flac").write_text("this is not a flac file")
    _, summary = run_update(Library(tmp_path / "db"), music, Fingerprinter(tiny_checkpoint))
    assert summary.indexed == 3
    skipped = dict(summary.skipped)
    assert set(map(Path, skipped)) == {music / "empty.mp3", music / "fake.flac"}
    assert all(reason for reason in skipped.values())


def test_cancel_keeps_what_was_indexed(music, tmp_path, tiny_checkpoint):
    library = Library(tmp_path / "db")
    calls = iter([False, True])
    _, summary = run_update(
        library, music, Fingerprinter(tiny_checkpoint), should_stop=lambda: next(calls)
    )
    assert summary.cancelled and len(library) == 1


def test_an_index_refuses_another_checkpoint(music, tmp_path, tiny_checkpoint):
    library = Library(tmp_path / "db")
    run_update(library, music, Fingerprinter(tiny_checkpoint))
    other = load_checkpoint(make_tiny_checkpoint(tmp_path / "other.pt", seed=1))
    with pytest.raises(IndexMismatchError, match="--rebuild"):
        Recognizer(library, other)
    with pytest.raises(IndexMismatchError):
        run_update(library, music, Fingerprinter(other))
    (tmp_path / "new").mkdir()
    renamed = load_checkpoint(make_tiny_checkpoint(tmp_path / "new" / tiny_checkpoint.path.name,
                                                   seed=1))  # fmt: skip
    with pytest.raises(IndexMismatchError, match=f"an earlier {tiny_checkpoint.path.name} "):
        Recognizer(library, renamed)


def test_a_renewed_calibration_keeps_the_index(music, tmp_path, tiny_checkpoint):
    """Re-evaluating a checkpoint rewrites its file (calibration, background), not its weights."""
    library = Library(tmp_path / "db")
    run_update(library, music, Fingerprinter(tiny_checkpoint))
    renewed = tmp_path / "renewed.pt"
    weights = load_torch(tiny_checkpoint.path).model
    save_checkpoint(renewed, weights, tiny_checkpoint.config,
                    evaluation={"calibration": {"evidence_threshold": {"9": 0.5}}},
                    background=np.eye(tiny_checkpoint.d, dtype=np.float32))  # fmt: skip
    renewed = load_checkpoint(renewed)
    assert renewed.sha256 != tiny_checkpoint.sha256
    assert built_by(library, renewed)
    [(music, _)] = Recognizer(library, renewed).background.parts
    assert len(music) == tiny_checkpoint.d


def test_empty_library_and_missing_folder(tmp_path, tiny_checkpoint):
    library = Library(tmp_path / "db")
    with pytest.raises(EmptyLibraryError):
        Recognizer(library, tiny_checkpoint)
    with pytest.raises(NfpError, match="not a folder"):
        run_update(library, tmp_path / "nowhere", Fingerprinter(tiny_checkpoint))


def test_a_damaged_track_store_is_reported(tmp_path):
    (tmp_path / "db").mkdir()
    (tmp_path / "db" / "tracks.sqlite").write_bytes(b"definitely not sqlite" * 100)
    with pytest.raises(IndexCorruptError, match="tracks.sqlite is damaged.*--rebuild"):
        Library(tmp_path / "db")


def test_lost_fingerprints_are_reported(music, tmp_path, tiny_checkpoint):
    library = Library(tmp_path / "db")
    run_update(library, music, Fingerprinter(tiny_checkpoint))
    library.close()
    next((tmp_path / "db").glob("vectors-*.f32")).write_bytes(b"")
    with pytest.raises(IndexCorruptError, match="missing.*repair it with: nfp index .* --db "):
        Recognizer(Library(tmp_path / "db"), tiny_checkpoint)


def test_a_library_being_indexed_is_not_cut_short_by_another_opener(
    music, tmp_path, tiny_checkpoint, monkeypatch
):
    writer = Library(tmp_path / "db")
    run = index_folder(writer, music, Fingerprinter(tiny_checkpoint))
    next(run)  # one file in: the writer holds the lock and may be appending

    def cut(*args):
        raise AssertionError("a second opener cut off rows of a running index")

    monkeypatch.setattr(VectorStore, "truncate", cut)
    reader = Library(tmp_path / "db")
    with pytest.raises(LibraryBusyError):
        next(index_folder(reader, music, Fingerprinter(tiny_checkpoint)))
    for _ in run:
        pass
    assert len(writer) == 3


def test_a_library_that_outgrows_exact_search_moves_to_compressed_rows(
    music, tmp_path, tiny_checkpoint, monkeypatch
):
    """Past FLAT_MAX_VECTORS rows the float32 rows become PQ codes (1/8 the size), the search
    index becomes IVF, later tracks are appended as codes, and matches still come back."""
    for module in ("engine.library.compaction", "engine.library.index"):
        monkeypatch.setattr(f"{module}.FLAT_MAX_VECTORS", 200)
    write_audio(music / "long.wav", music_like(120.0, 16000, 11), 16000)
    fingerprinter = Fingerprinter(tiny_checkpoint)
    library = Library(tmp_path / "db")
    run_update(library, music, fingerprinter)
    db = tmp_path / "db"
    assert sorted(p.name for p in db.glob("vectors-*")) == ["vectors-1.pq"]
    assert (db / "codec-1.faiss").is_file() and library.info()["index_spec"].startswith("IVF")
    rows = library.db.records().committed_rows
    assert (db / "vectors-1.pq").stat().st_size == rows * 32  # d=64: 32 bytes, not 256

    write_audio(music / "late.wav", music_like(30.0, 16000, 12), 16000)
    _, summary = run_update(library, music, fingerprinter)
    assert summary.indexed == 1 and library.db.records().committed_rows > rows
    recognizer = Recognizer(library, tiny_checkpoint)
    for name, title in (("album/two.mp3", "Two"), ("late.wav", "late")):
        audio = load_audio(music / name)[8 * 8000 : 13 * 8000]
        found = recognizer.best(recognizer.fingerprinter.audio(audio))
        assert recognizer.tracks[found.track].title == title
        assert found.offset_s == pytest.approx(8.0, abs=0.5)


def test_removing_a_folder_takes_its_tracks_out_and_keeps_the_others(music, tmp_path, capsys):
    """Also through `nfp remove`: tracks inside another kept folder stay, and a folder missing
    on disk can be removed (that is how its tracks are given up)."""
    db = tmp_path / "db"
    assert cli_main(["index", str(music / "album"), "--db", str(db)]) == 0
    assert cli_main(["index", str(music), "--db", str(db)]) == 0
    with Library(db) as library:
        assert len(library) == 3
        assert remove_folder(library, music) == 1  # three.ogg; album/ is a folder of its own
        assert sorted(Path(t.path).name for t in library.tracks()) == ["one.flac", "two.mp3"]
    shutil.rmtree(music / "album")
    capsys.readouterr()
    assert cli_main(["remove", str(music / "album"), "--db", str(db)]) == 0
    assert "removed 2 tracks" in capsys.readouterr().out
    with Library(db, writable=False) as library:
        assert len(library) == 0 and not library.folders()
    assert cli_main(["remove", str(music), "--db", str(tmp_path / "none")]) == 1
    assert not (tmp_path / "none").exists()  # no library is made to remove nothing from


def test_skip_reasons_are_kept_with_the_library_until_the_file_is_fixed(
    music, tmp_path, tiny_checkpoint
):
    (music / "broken.mp3").write_bytes(b"garbage")
    fingerprinter = Fingerprinter(tiny_checkpoint)
    with Library(tmp_path / "db") as library:
        run_update(library, music, fingerprinter)
    with Library(tmp_path / "db", writable=False) as library:  # another process, later
        [(path, reason)] = library.skipped()
        assert Path(path).name == "broken.mp3" and reason.startswith("a damaged MP3")
    write_audio(music / "broken.mp3", music_like(6.0, 22050, 9), 22050)
    with Library(tmp_path / "db") as library:
        run_update(library, music, fingerprinter)
        assert library.skipped() == [] and len(library) == 4


def test_files_decode_side_by_side_and_come_back_in_file_order(music, tiny_checkpoint, monkeypatch):
    """engine.library.parallel.LocalSource: files decode side by side (each worker queuing its
    file's encoder batches), yet come back in file order, each with its own outcome."""
    files = sorted(scan_folder(music).files, key=lambda f: f.path)
    real, running, most = parallel.decode_file, set(), [0]

    def slow_first(path, stored_digests):
        running.add(threading.get_ident())
        most[0] = max(most[0], len(running))
        time.sleep(0.3 if path == files[0].path else 0.05)  # the first file finishes last
        try:
            if path == files[1].path:
                raise OSError("boom")
            return real(path, stored_digests)
        finally:
            running.discard(threading.get_ident())

    monkeypatch.setattr(parallel, "decode_file", slow_first)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    source = parallel.LocalSource(Fingerprinter(tiny_checkpoint))
    outcomes = list(source.fingerprints(files, frozenset()))
    assert [f.path for f, _ in outcomes] == [f.path for f in files]
    assert isinstance(outcomes[1][1], OSError)
    assert all(not isinstance(o, Exception) for _, o in outcomes[:1] + outcomes[2:])
    assert most[0] == 2


def test_a_file_s_encoder_batches_run_on_every_core_with_the_same_fingerprints(
    music, tiny_checkpoint, monkeypatch
):
    """The last file of a scan does not leave a core idle: its batches go to whichever worker
    is free, and its fingerprints are those of one core doing them all."""
    [first] = sorted(scan_folder(music).files, key=lambda f: f.path)[:1]
    alone = Fingerprinter(tiny_checkpoint, batch_segments=8, threads=1)
    expected = alone.audio(load_audio(first.path))
    real, threads = Fingerprinter.segments, set()

    def recorded(self, segments):
        threads.add(threading.get_ident())
        time.sleep(0.05)  # long enough for the other worker to take the next batch
        return real(self, segments)

    monkeypatch.setattr(Fingerprinter, "segments", recorded)
    monkeypatch.setattr(parallel, "usable_cores", lambda: 2)
    source = parallel.LocalSource(Fingerprinter(tiny_checkpoint, batch_segments=8))
    [(_, outcome)] = source.fingerprints([first], frozenset())
    assert len(expected) > 2 * 8 and len(threads) == 2
    np.testing.assert_array_equal(outcome.fp, expected)


def test_the_records_are_read_whole_and_a_damaged_one_is_kept_as_its_cause():
    records = Records.parse({"d": "128", "committed_rows": "10", "generation": "2", "codec": "pq",
                             "folders": '["/m", 3]', "fingerprints_sha256": "ab"})  # fmt: skip
    assert (records.d, records.committed_rows, records.generation, records.codec) == (
        128, 10, 2, "pq")  # fmt: skip
    assert records.folders == ("/m",) and records.fingerprints_sha256 == "ab"
    assert records.damage is None and records.checkpoint_path is None
    assert Records.parse({}).d is None and Records.parse({}).damage is None  # not bound yet
    assert Records.parse({"d": "0"}).damage == "record d=0 is not a fingerprint width"
    damaged = Records.parse({"d": "128", "committed_rows": "-1", "folders": "{"})
    assert damaged.damage == "record committed_rows='-1' is not a count"
    assert damaged.d == 128 and damaged.folders == ()  # the rest stays readable


def test_opening_a_library_for_a_query_reads_its_records_once_per_operation(
    music, tmp_path, tiny_checkpoint, monkeypatch
):
    library = Library(tmp_path / "db")
    run_update(library, music, Fingerprinter(tiny_checkpoint))
    reads = []

    def counted(name, method):
        def read(self, *args, **kwargs):
            reads.append(name)
            return method(self, *args, **kwargs)

        return read

    for name in ("records", "snapshot", "tracks", "count", "known_files"):
        monkeypatch.setattr(TrackDB, name, counted(name, getattr(TrackDB, name)))
    with Library(tmp_path / "db", writable=False) as reader:
        Recognizer(reader, tiny_checkpoint)
    # the checkpoint's check, then one snapshot (its records inside) for the search index
    assert reads == ["records", "snapshot", "records"]


def test_a_new_release_of_the_checkpoint_makes_the_library_again(music, tmp_path, capsys):
    """`nfp index` with other weights under the library's checkpoint name (an upgrade of the
    shipped model) fingerprints its folders again; another checkpoint is still refused."""
    for name in ("old", "new"):
        (tmp_path / name).mkdir()
    old = make_tiny_checkpoint(tmp_path / "old" / "nfp-tiny.pt")
    new = make_tiny_checkpoint(tmp_path / "new" / "nfp-tiny.pt", seed=1)
    db = tmp_path / "db"
    assert nfp("index", music, "--db", db, "--checkpoint", old) == 0
    assert nfp("index", music, "--db", db, "--checkpoint", new) == 0
    assert "made by an earlier nfp-tiny.pt" in capsys.readouterr().err
    with Library(db, writable=False) as library:
        assert built_by(library, load_checkpoint(new)) and len(library) > 0
    other = make_tiny_checkpoint(tmp_path / "other.pt", seed=2)
    assert nfp("index", music, "--db", db, "--checkpoint", other) == 1
    assert "--rebuild" in capsys.readouterr().err
