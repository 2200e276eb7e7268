"""Fingerprinting on Dask workers (`nfp index --workers N | --scheduler ADDRESS`,
engine.library.parallel): the same library as one process makes, and every promise of
docs/reliability.md kept with fingerprints made elsewhere. Most tests share one LocalCluster through
--scheduler; the ones about --workers start their own, as a user's command does."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import dask
import distributed  # the cluster extra: scripts/setup.sh installs it, so the suite runs this
import numpy as np
import pytest
from distributed.client import FutureCancelledError

from engine.core.audio import SAMPLE_RATE, load_audio
from engine.core.errors import AudioDecodeError
from engine.library.library import Library
from engine.library.parallel import WORKER_DIED, _dask_outcome
from engine.library.searching import search_index
from tests.support.audio_files import music_folder, music_like, write_audio
from tests.support.library_helpers import nfp, one_line_error, rows_file, run_frozen, tracks_of

REPO = Path(__file__).parents[1]


@pytest.fixture(scope="module")
def kill_control(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where a test tells the shared cluster's workers which file kills them (worker_hook.py)."""
    return tmp_path_factory.mktemp("kill") / "control.json"


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory, kill_control: Path) -> str:
    """The address of a two-worker LocalCluster shaped like `--workers 2`'s, whose workers (and
    those their nanny restarts) carry tests/support/worker_hook.py. A task may kill workers
    twice."""
    hook = tmp_path_factory.mktemp("hook")
    shutil.copy(Path(__file__).parent / "support" / "worker_hook.py", hook / "sitecustomize.py")
    spawn_env = {"PYTHONPATH": f"{hook}{os.pathsep}{REPO}",
                 "NFP_TEST_KILL_CONTROL": str(kill_control)}  # fmt: skip
    saved = {k: os.environ.get(k) for k in spawn_env}  # pre-spawn-environ lands in os.environ
    config = {"distributed.nanny.pre-spawn-environ": spawn_env,
              "distributed.scheduler.allowed-failures": 1,
              "distributed.scheduler.worker-saturation": 1.0}  # fmt: skip
    with dask.config.set(config):
        cluster = distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
            env={"NFP_THREADS": "1"},
        )  # fmt: skip
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


@pytest.fixture
def six_tracks(tmp_path: Path) -> Path:
    return music_folder(tmp_path / "six", 6, 12.0, first_seed=200)


def fingerprints_of(db: Path) -> dict[str, tuple[int, np.ndarray]]:
    """path → (n_segments, fingerprints float32 (n_segments, d)) of every track."""
    with Library(db, writable=False) as library:
        index, _, tracks = search_index(library)
        rows = index.vectors
        return {t.path: (t.n_segments, rows[t.first_segment : t.first_segment + t.n_segments])
                for t in tracks}  # fmt: skip


def assert_consistent(db: Path) -> None:
    with Library(db, writable=False) as library:
        assert library.damaged_tracks() == []
        records = library.db.records()
        assert records.committed_rows == sum(t.n_segments for t in library.tracks())
        assert len(np.fromfile(rows_file(db), np.float32)) == records.committed_rows * records.d


def identify_json(db: Path, query: Path, capsys) -> dict:
    assert nfp("identify", query, "--db", db, "--json") == 0
    return json.loads(capsys.readouterr().out)["match"]


# ---- the same library ------------------------------------------------------------------------
@pytest.mark.slow
def test_two_workers_make_the_library_one_process_makes(six_tracks, tmp_path, capsys):
    assert nfp("index", six_tracks, "--db", tmp_path / "one") == 0
    assert nfp("index", six_tracks, "--db", tmp_path / "two", "--workers", 2) == 0
    assert "indexed 6, unchanged 0" in capsys.readouterr().out
    one, two = fingerprints_of(tmp_path / "one"), fingerprints_of(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 6
    for path, (n, fp) in one.items():
        assert two[path][0] == n
        cosine = np.einsum("nd,nd->n", fp, two[path][1])
        assert cosine.min() > 0.999, path  # one encoder thread per worker, two here: rounding
    excerpt = load_audio(six_tracks / "t3.wav")[2 * SAMPLE_RATE : 7 * SAMPLE_RATE]
    query = write_audio(tmp_path / "q.wav", excerpt, SAMPLE_RATE)
    match_one, match_two = (
        identify_json(tmp_path / "one", query, capsys),
        identify_json(tmp_path / "two", query, capsys),
    )
    assert match_one["path"] == match_two["path"] == str(six_tracks / "t3.wav")
    assert match_one["offset_s"] == match_two["offset_s"]
    assert match_one["score"] == pytest.approx(match_two["score"], abs=1e-3)


# ---- incremental -----------------------------------------------------------------------------
@pytest.mark.slow
def test_an_update_on_workers_is_incremental_and_moves_keep_their_fingerprints(
    six_tracks, tmp_path, scheduler, capsys
):
    db = tmp_path / "db"
    assert nfp("index", six_tracks, "--db", db, "--scheduler", scheduler) == 0
    assert "indexed 6" in capsys.readouterr().out
    assert nfp("index", six_tracks, "--db", db, "--scheduler", scheduler) == 0
    assert "indexed 0, unchanged 6, moved 0" in capsys.readouterr().out
    before = fingerprints_of(db)
    (six_tracks / "t1.wav").rename(six_tracks / "renamed.wav")
    shutil.copy(six_tracks / "t2.wav", six_tracks / "copy a.wav")  # two copies of one track
    (six_tracks / "t2.wav").rename(six_tracks / "copy b.wav")  # that moved: one takes the move
    assert nfp("index", six_tracks, "--db", db, "--scheduler", scheduler) == 0
    out = capsys.readouterr().out
    assert "indexed 1, unchanged 4, moved 2, skipped 0, removed 0" in out
    after = fingerprints_of(db)
    assert np.array_equal(after[str(six_tracks / "renamed.wav")][1],
                          before[str(six_tracks / "t1.wav")][1])  # fmt: skip
    assert_consistent(db)


@pytest.mark.slow
def test_a_rebuild_runs_on_workers_too(six_tracks, tmp_path, scheduler, capsys):
    db = tmp_path / "db"
    assert nfp("index", six_tracks, "--db", db) == 0
    (six_tracks / "t0.wav").unlink()
    assert nfp("index", six_tracks, "--db", db, "--rebuild", "--scheduler", scheduler) == 0
    assert "indexed 5" in capsys.readouterr().out
    assert [Path(p).name for p in tracks_of(db)] == [f"t{i}.wav" for i in range(1, 6)]
    assert_consistent(db)


@pytest.mark.slow
def test_a_bad_file_is_a_skip_reason_on_workers(six_tracks, tmp_path, scheduler, capsys):
    (six_tracks / "x.mp3").write_text("not audio at all")
    db = tmp_path / "db"
    assert nfp("index", six_tracks, "--db", db, "--scheduler", scheduler) == 0
    out = capsys.readouterr().out
    assert "indexed 6" in out and "skipped 1" in out
    assert "skipped " + str(six_tracks / "x.mp3") + ": " in out and "not really MP3" in out
    assert len(tracks_of(db)) == 6


def test_a_worker_error_crosses_the_process_boundary_whole():
    error = pickle.loads(pickle.dumps(AudioDecodeError("/music/x.mp3", "not really MP3")))
    assert isinstance(error, AudioDecodeError)
    assert (error.path, error.cause, str(error)) == (
        "/music/x.mp3",
        "not really MP3",
        "/music/x.mp3: cannot decode audio (not really MP3)",
    )


# ---- crashes ---------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize(("moment", "survives"), [("rows appended", 2), ("track committed", 3)])
def test_kill_9_of_the_writer_with_workers_loses_at_most_the_files_in_flight(
    tmp_path, eight_tracks, scheduler, capsys, moment, survives
):
    db = tmp_path / "db"
    args = ["index", str(eight_tracks), "--db", str(db), "--workers", "2"]
    run_frozen(tmp_path, args, moment, after=3)
    assert len(tracks_of(db)) == survives  # a reader sees only committed tracks
    assert nfp("index", eight_tracks, "--db", db, "--scheduler", scheduler) == 0  # resumes
    assert f"indexed {8 - survives}, unchanged {survives}" in capsys.readouterr().out
    assert len(tracks_of(db)) == 8
    assert_consistent(db)


@pytest.mark.slow
@pytest.mark.parametrize(("times", "outcome"), [(1, "retried"), (99, "skipped")])
def test_a_worker_that_dies_mid_file_never_half_writes_it(
    six_tracks, tmp_path, scheduler, kill_control, capsys, times, outcome
):
    """Its file is retried on another worker, or, if it kills every worker that takes it, skipped
    as `distributed.KilledWorker` (after allowed-failures + 1 deaths); every other file is
    indexed. The killer sorts last, so it is never queued behind another file on a worker."""
    killer = six_tracks / "zz dies.wav"
    write_audio(killer, music_like(12.0, SAMPLE_RATE, 300), SAMPLE_RATE)
    kill_control.write_text(json.dumps({"name": killer.name, "times": times}))
    try:
        db = tmp_path / "db"
        assert nfp("index", six_tracks, "--db", db, "--scheduler", scheduler) == 0
    finally:
        kill_control.unlink()
        shutil.rmtree(kill_control.with_suffix(".kills"), ignore_errors=True)
    out = capsys.readouterr().out
    if outcome == "retried":
        assert "indexed 7, unchanged 0, moved 0, skipped 0" in out
    else:
        assert "indexed 6, unchanged 0, moved 0, skipped 1" in out
        assert f"skipped {killer}: {WORKER_DIED}" in out
    assert len(tracks_of(db)) == (7 if outcome == "retried" else 6)
    assert_consistent(db)


# ---- errors and imports ----------------------------------------------------------------------
def test_an_unreachable_scheduler_is_one_line(tmp_path, music_dir, monkeypatch, capsys):
    monkeypatch.setattr("engine.library.parallel.CONNECT_TIMEOUT_S", 1)
    db = tmp_path / "db"
    assert nfp("index", music_dir, "--db", db, "--scheduler", "tcp://127.0.0.1:1") == 1
    one_line_error(capsys, "tcp://127.0.0.1:1: cannot reach the Dask scheduler")


def test_workers_without_the_cluster_extra_name_it(tmp_path, music_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed fails
    assert nfp("index", music_dir, "--db", tmp_path / "db", "--workers", 2) == 1
    one_line_error(capsys, "pip install 'nfp[cluster]'")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--workers", "2", "--scheduler", "tcp://h:8786"], "not allowed with"),
     (["--workers", "0"], "expected a number of workers from 1 to")],
)  # fmt: skip
def test_contradictory_worker_options_are_usage_errors(music_dir, capsys, args, message):
    with pytest.raises(SystemExit) as exit:
        nfp("index", music_dir, *args)
    assert exit.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
def test_indexing_without_workers_never_imports_dask(music_dir, tmp_path):
    index = ["index", str(music_dir), "--db", str(tmp_path / "db")]
    code = (
        "import sys, engine.cli, engine.library.library, engine.library.parallel\n"
        "import engine.library.rebuild\n"
        f"assert engine.cli.main({index!r}) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_task_the_cluster_cancelled_or_killed_is_that_files_skip_reason():
    """What a finished Dask future can hold besides a result: each becomes a one-line reason."""

    def job(error: Exception) -> SimpleNamespace:
        def result():
            raise error

        return SimpleNamespace(result=result)

    died = _dask_outcome(job(distributed.KilledWorker("task-1", None, 3)))
    assert str(died) == WORKER_DIED
    cancelled = _dask_outcome(job(FutureCancelledError("task-2", reason="already forgotten")))
    assert str(cancelled).startswith("the Dask cluster cancelled its task")
    assert "already forgotten" in str(cancelled)
    bad = AudioDecodeError(Path("x.ogg"), "not audio")
    assert _dask_outcome(job(bad)) is bad
