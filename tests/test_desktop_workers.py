"""Jobs in worker threads: indexing progress and cancel, live listening, file identification."""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.core.errors import EmptyLibraryError, NoInputDeviceError
from engine.library.indexing import MISSING_FOLDER, IndexProgress
from engine.library.store import REBUILD_DB
from engine.query.stream import LiveState
from nfp_desktop.session import LibrarySession
from nfp_desktop.workers import (
    DeviceOpened,
    GeneratorWorker,
    IndexOutcome,
    describe_error,
    identify_job,
    index_job,
    listen_job,
)
from tests.support.desktop_helpers import (
    MIC_RATE,
    index_library,
    install_fake_mic,
    spectral_checkpoint_file,
    track_audio,
)

pytestmark = pytest.mark.gui
WAIT_MS = 60_000  # generous: the machine is shared; a passing run takes a few seconds


def run_worker(qtbot, worker: GeneratorWorker) -> tuple[list, object, object]:
    """Start the worker, wait until it finishes; returns (progress items, result, error)."""
    steps, outcome = [], {}
    worker.progressed.connect(steps.append)
    worker.succeeded.connect(lambda r: outcome.setdefault("result", r))
    worker.failed.connect(lambda e: outcome.setdefault("error", e))
    with qtbot.waitSignal(worker.finished, timeout=WAIT_MS):
        worker.start()
    qtbot.wait(10)  # deliver the queued signals emitted just before `finished`
    return steps, outcome.get("result"), outcome.get("error")


@pytest.fixture(scope="module")
def spectral_path(tmp_path_factory) -> Path:
    return spectral_checkpoint_file(tmp_path_factory.mktemp("ckpt") / "spectral.pt")


@pytest.fixture
def indexed(tmp_path: Path, music_dir: Path, spectral_path: Path) -> LibrarySession:
    index_library(tmp_path / "library", music_dir, spectral_path)
    return LibrarySession(tmp_path / "library")


def test_index_worker_reports_each_file_and_returns_the_tracks(
    qtbot, tmp_path, music_dir, tiny_checkpoint_path
) -> None:
    session = LibrarySession(tmp_path / "library")
    job = index_job(session, tiny_checkpoint_path, [str(music_dir)])
    steps, outcome, error = run_worker(qtbot, GeneratorWorker(job))
    assert error is None and isinstance(outcome, IndexOutcome)
    assert all(isinstance(s, IndexProgress) for s in steps)
    assert [s.done for s in steps] == [1, 2, 3] and steps[-1].total == 3
    assert outcome.summary.indexed == 3 and not outcome.summary.cancelled
    assert sorted(t.title for t in outcome.tracks) == ["One", "Three", "Two"]
    again = run_worker(qtbot, GeneratorWorker(job))[1]  # incremental: nothing new to do
    assert again.summary.indexed == 0 and again.summary.unchanged == 3


def test_index_worker_cancels_between_files_and_keeps_what_it_did(
    qtbot, tmp_path, music_dir, tiny_checkpoint_path
) -> None:
    session = LibrarySession(tmp_path / "library")
    worker = GeneratorWorker(index_job(session, tiny_checkpoint_path, [str(music_dir)]))
    # A direct connection cancels inside the worker thread, right after the first file.
    worker.progressed.connect(lambda _: worker.cancel(), Qt.ConnectionType.DirectConnection)
    steps, outcome, _ = run_worker(qtbot, worker)
    assert len(steps) == 1 and outcome.summary.cancelled
    assert outcome.summary.indexed == 1 and len(outcome.tracks) == 1


def test_index_worker_reports_a_missing_folder_as_skipped(
    qtbot, tmp_path, music_dir, tiny_checkpoint_path
) -> None:
    session = LibrarySession(tmp_path / "library")
    folders = [str(tmp_path / "gone"), str(music_dir)]
    _, outcome, _ = run_worker(
        qtbot, GeneratorWorker(index_job(session, tiny_checkpoint_path, folders))
    )
    assert outcome.summary.indexed == 3
    assert outcome.summary.skipped == [(str(tmp_path / "gone"), MISSING_FOLDER)]


def test_rebuild_indexes_beside_the_old_library_and_replaces_it(
    qtbot, indexed, music_dir, tiny_checkpoint_path, tmp_path
) -> None:
    two = Path(shutil.copytree(music_dir, tmp_path / "two"))
    (two / "three.ogg").unlink()
    old = indexed.library()
    job = index_job(indexed, tiny_checkpoint_path, [str(two)], rebuild=True)
    _, outcome, _ = run_worker(qtbot, GeneratorWorker(job))
    assert outcome.rebuilt and [t.title for t in outcome.tracks] == ["One", "Two"]
    assert len(old.tracks()) == 3  # an open library keeps serving the old index until reopened
    indexed.close()
    assert [t.title for t in indexed.tracks()] == ["One", "Two"]
    assert not (indexed.db_dir / REBUILD_DB).exists()


def test_listen_job_matches_a_library_track(qtbot, monkeypatch, indexed, music_dir) -> None:
    install_fake_mic(monkeypatch, track_audio(music_dir / "album" / "one.flac", 5.0, 8.0))
    steps, final, error = run_worker(
        qtbot, GeneratorWorker(listen_job(indexed, "", continuous=False))
    )
    assert error is None
    assert isinstance(steps[0], DeviceOpened) and steps[0].notice == ""
    states = [s for s in steps if isinstance(s, LiveState)]
    assert states[0].status == "listening" and states[0].level_db > -40
    assert final.status == "matched" and final.match.track.title == "One"
    assert final.match.offset_s == pytest.approx(5.0 + final.heard_s, abs=0.6)


def test_listen_job_says_when_the_saved_device_is_gone(qtbot, monkeypatch, indexed) -> None:
    install_fake_mic(monkeypatch, np.zeros(MIC_RATE, np.float32))
    steps, _, _ = run_worker(
        qtbot, GeneratorWorker(listen_job(indexed, "Old USB mic", continuous=True))
    )
    assert "Old USB mic" in steps[0].notice and "Fake microphone" in steps[0].notice


def test_listen_job_stops_when_cancelled(qtbot, monkeypatch, indexed) -> None:
    install_fake_mic(monkeypatch, np.zeros(60 * MIC_RATE, np.float32))
    worker = GeneratorWorker(listen_job(indexed, "", continuous=True))
    worker.progressed.connect(lambda _: worker.cancel(), Qt.ConnectionType.DirectConnection)
    steps, final, error = run_worker(qtbot, worker)
    assert error is None and len(steps) <= 2 and final is None


def test_listen_job_reports_an_unplugged_device(qtbot, monkeypatch, indexed, music_dir) -> None:
    audio = track_audio(music_dir / "three.ogg", 0.0, 5.0)
    install_fake_mic(monkeypatch, audio, fail_after_s=1.0)
    _, _, error = run_worker(qtbot, GeneratorWorker(listen_job(indexed, "", continuous=True)))
    assert isinstance(error, NoInputDeviceError) and "stopped delivering audio" in str(error)


def test_listen_job_reports_an_empty_library(qtbot, monkeypatch, tmp_path) -> None:
    install_fake_mic(monkeypatch, np.zeros(MIC_RATE, np.float32))
    session = LibrarySession(tmp_path / "empty")
    _, _, error = run_worker(qtbot, GeneratorWorker(listen_job(session, "", continuous=True)))
    assert isinstance(error, EmptyLibraryError)
    assert "Library tab" in describe_error(error)


def test_identify_job_short_file_and_long_file(qtbot, indexed, music_dir, tmp_path) -> None:
    from tests.support.audio_files import write_audio

    short = write_audio(
        tmp_path / "clip.wav", track_audio(music_dir / "album" / "two.mp3", 4.0, 6.0), MIC_RATE
    )
    _, result, error = run_worker(qtbot, GeneratorWorker(identify_job(indexed, short)))
    assert error is None and result.match is not None and result.match.track.title == "Two"
    assert result.match.offset_s == pytest.approx(4.0, abs=0.6)
    parts = [track_audio(music_dir / n, 0.0, 16.0) for n in ("three.ogg", "album/one.flac")]
    mix = write_audio(tmp_path / "mix.wav", np.concatenate(parts), MIC_RATE)
    steps, result, _ = run_worker(qtbot, GeneratorWorker(identify_job(indexed, mix)))
    assert [e.track.title for e in result.tracklist] == ["Three", "One"]
    assert result.tracklist[1].start_s == pytest.approx(16.0, abs=2.0)
    shares = [detail for _, detail in steps if "% done" in detail]
    assert shares and "left" in shares[-1]


def test_a_long_track_list_can_be_cancelled(qtbot, indexed, music_dir, tmp_path) -> None:
    from tests.support.audio_files import write_audio

    parts = [track_audio(music_dir / n, 0.0, 16.0) for n in ("three.ogg", "album/one.flac")]
    mix = write_audio(tmp_path / "mix.wav", np.concatenate(parts * 2), MIC_RATE)
    worker = GeneratorWorker(identify_job(indexed, mix))

    def cancel_when_listing(step: tuple[str, str]) -> None:
        if "% done" in step[1]:
            worker.cancel()

    worker.progressed.connect(cancel_when_listing, Qt.ConnectionType.DirectConnection)
    _, result, error = run_worker(qtbot, worker)
    assert error is None and result.cancelled and result.tracklist is None


def test_identify_job_reports_an_undecodable_file(qtbot, indexed, tmp_path) -> None:
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(b"not audio at all")
    _, _, error = run_worker(qtbot, GeneratorWorker(identify_job(indexed, bad)))
    assert "bad.mp3" in str(error) and "cannot decode" in str(error)
