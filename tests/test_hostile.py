"""The second hostile sweep (issue 23), through the `nfp` command: tampered libraries and exports,
hostile names and paths, bad settings. Every case asserts the exit status, one line on stderr
naming the file and the cause, no traceback, and nothing written outside the library.
docs/reliability.md maps each promise to its test here."""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from engine.core.audio import SAMPLE_RATE, load_audio
from engine.library.library import Library
from engine.model.checkpoint import default_checkpoint_path, file_sha256
from engine.model.load import export_cache_dir, load_checkpoint
from engine.model.onnx_backend import background_path
from tests.support.audio_files import music_like, write_audio
from tests.support.library_helpers import nfp, one_line_error, rows_file, tamper_meta
from tests.support.tiny import copy_checkpoint, make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
NO_TORCH = Path(__file__).parent / "support" / "no_torch.py"


def run_nfp(*args: object, env: dict | None = None, stdin=subprocess.DEVNULL):
    """`nfp ARGS` in a child process (for what happens before main: settings, imports)."""
    return subprocess.run([sys.executable, "-m", "engine.cli", *map(str, args)], cwd=REPO,
                          env=env or os.environ.copy(), stdin=stdin, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def assert_one_line(done: subprocess.CompletedProcess, *fragments: str) -> None:
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nfp: error:"), done.stderr
    assert "Traceback" not in done.stderr
    for fragment in fragments:
        assert fragment in lines[0], done.stderr


# ---- confident wrong answers: rows and exports that are not what they claim -------------------
def reverse_rows(db: Path) -> None:
    """Every row still a unit vector, but no track's own: as another library's rows would be."""
    path = rows_file(db)
    rows = np.fromfile(path, np.float32).reshape(-1, 128)
    rows[::-1].tofile(path)


def swap_two_tracks(db: Path) -> None:
    path = rows_file(db)
    rows = np.fromfile(path, np.float32).reshape(-1, 128)
    rows[:20], rows[-20:] = rows[-20:].copy(), rows[:20].copy()
    rows.tofile(path)


@pytest.mark.parametrize("damage", [reverse_rows, swap_two_tracks])
@pytest.mark.parametrize("command", ["identify", "tracklist", "info"])
def test_rows_that_are_not_the_tracks_own_are_refused(db, query, capsys, damage, command):
    damage(db)
    args = {"identify": ("identify", query), "tracklist": ("tracklist", query), "info": ("info",)}
    assert nfp(*args[command], "--db", db) == 1
    one_line_error(capsys, str(db), "damaged", "repair it with: nfp index ")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny calibrated .pt with a background, and its export beside it (made by `nfp export`)."""
    pt = tmp_path_factory.mktemp("exported") / "tiny.pt"
    background = np.random.default_rng(5).standard_normal((64, 64)).astype(np.float32)
    background /= np.linalg.norm(background, axis=1, keepdims=True)
    calibration = {"calibration": {"evidence_threshold": {"9": 3.0}}}
    make_tiny_checkpoint(pt, seed=11, evaluation=calibration, background=background)
    assert nfp("export", pt) == 0
    return pt


Tamper = Callable[[onnx.ModelProto, Path], None]  # an export's model, edited, and its path


def edit_metadata(key: str, edit: Callable[[dict], object]) -> Tamper:
    def tamper(model: onnx.ModelProto, export: Path) -> None:
        for prop in model.metadata_props:
            if prop.key == "nfp." + key:
                prop.value = json.dumps(edit(json.loads(prop.value)))

    return tamper


def zero_background(model: onnx.ModelProto, export: Path) -> None:
    """Zeroed background rows beside the export, and their hash in it: a consistent forgery."""
    rows = background_path(export)
    np.save(rows, np.zeros_like(np.load(rows)))
    sha256 = hashlib.sha256(rows.read_bytes()).hexdigest()
    edit_metadata("background", lambda encoded: {"sha256": sha256})(model, export)


def flip_weights(model: onnx.ModelProto, export: Path) -> None:
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(biggest)
    biggest.CopyFrom(numpy_helper.from_array(-weights[::-1].copy(), biggest.name))


TAMPERED_EXPORTS = {
    "thresholds near zero": edit_metadata(
        "evaluation", lambda e: {"calibration": {"evidence_threshold": {"9": 1e-6}}}
    ),
    "background zeroed": zero_background,
    "flipped weights": flip_weights,
}


@pytest.fixture(params=TAMPERED_EXPORTS)
def tampered(request, exported: Path, tmp_path: Path) -> Path:
    """A copy of the .pt whose export beside it was edited."""
    pt = Path(shutil.copy(exported, tmp_path / exported.name))
    shutil.copy(background_path(exported.with_suffix(".onnx")), tmp_path)
    model = onnx.load(str(exported.with_suffix(".onnx")))
    TAMPERED_EXPORTS[request.param](model, pt.with_suffix(".onnx"))
    onnx.save(model, str(pt.with_suffix(".onnx")))
    return pt


def test_a_tampered_export_is_never_used(tampered: Path, music, tmp_path, capsys, caplog):
    """With torch, a fresh export is made (and a warning says so); the edited one is never read
    for anything."""
    assert nfp("index", music, "--db", tmp_path / "db", "--checkpoint", tampered) == 0
    assert "Traceback" not in capsys.readouterr().err
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(m.startswith(f"{tampered.with_suffix('.onnx')}: not a usable nfp checkpoint")
               and m.endswith("not used") for m in warned), warned  # fmt: skip
    running = load_checkpoint(tampered)
    assert running.onnx_path.parent == export_cache_dir()
    assert running.evaluation["calibration"]["evidence_threshold"] == {"9": 3.0}
    assert running.background.any()


def test_a_tampered_export_is_refused_without_torch(tampered: Path, music, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    shutil.copy(NO_TORCH, hook / "sitecustomize.py")
    env = {**os.environ, "PYTHONPATH": str(hook), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = run_nfp("index", music, "--db", tmp_path / "db", "--checkpoint", tampered, env=env)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"nfp: error: {tampered}: ") and "export was refused" in last
    assert not (tmp_path / "db" / "tracks.sqlite").exists()


def test_an_export_never_overwrites_a_checkpoint(exported: Path, tmp_path, capsys):
    pt = Path(shutil.copy(exported, tmp_path / "good.pt"))
    before = file_sha256(pt)
    assert nfp("export", pt, "--out", pt) == 1
    one_line_error(capsys, str(pt), ".onnx")
    assert file_sha256(pt) == before


# ---- nothing written outside the library's own files ------------------------------------------
def plant_link_as_rows(db: Path, victim: Path) -> Path:
    rows = rows_file(db)
    rows.unlink()
    rows.symlink_to(victim)
    return rows


def plant_link_as_lock(db: Path, victim: Path) -> Path:
    lock = db / "write.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(victim)
    return lock


@pytest.mark.parametrize("plant", [plant_link_as_rows, plant_link_as_lock])
def test_a_link_in_the_library_folder_is_never_written_through(db, music, tmp_path, capsys, plant):
    victim = tmp_path / "someone-elses-file"
    victim.write_bytes(b"precious" * 1000)
    link = plant(db, victim)
    assert nfp("index", music, "--db", db) == 1
    one_line_error(capsys, str(link), "symbolic link")
    assert victim.read_bytes() == b"precious" * 1000


def test_a_folder_nfp_did_not_make_is_not_made_a_library(music, tmp_path, capsys):
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("mine")
    for flag in ((), ("--rebuild",)):
        assert nfp("index", music, "--db", home, *flag) == 1
        one_line_error(capsys, str(home), "holds files nfp did not make", "notes.txt")
        assert sorted(p.name for p in home.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("folder", ["missing", "a-file.wav"])
def test_indexing_a_folder_that_is_not_there_makes_no_library(tmp_path, capsys, folder):
    (tmp_path / "a-file.wav").write_bytes(b"RIFF")
    assert nfp("index", tmp_path / folder, "--db", tmp_path / "db") == 1
    one_line_error(capsys, str(tmp_path / folder), "not a folder")
    assert not (tmp_path / "db").exists()


# ---- unsafe: hostile tags and names, paths that are URLs or not files, telemetry -------------
HOSTILE = "\x1b[2J\x1b]0;owned\x07\x1b[31m"  # clear screen, set the window title, turn red


@pytest.fixture(scope="module")
def hostile_library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A library of one track whose tags and file name carry terminal escapes and a newline,
    and a 5 s query of it (whose own name does too)."""
    root = tmp_path_factory.mktemp("hostile")
    music = root / "music"
    music.mkdir()
    audio = music_like(20.0, SAMPLE_RATE, 41)
    tags = {"title": f"Title{HOSTILE}", "artist": "Artist\nnfp: error: fake"}
    write_audio(music / f"evil{HOSTILE}.flac", audio, SAMPLE_RATE, tags=tags)
    query = write_audio(root / f"q{HOSTILE}\n.wav", audio[6 * SAMPLE_RATE : 11 * SAMPLE_RATE],
                        SAMPLE_RATE)  # fmt: skip
    assert nfp("index", music, "--db", root / "db") == 0
    return root / "db", query


def assert_printable(text: str) -> None:
    """No control character reaches the terminal but the newlines that end lines."""
    assert not any(ord(ch) < 32 and ch != "\n" for ch in text), repr(text)
    assert "\x1b" not in text and "\x07" not in text


@pytest.mark.parametrize("command", ["identify", "tracklist", "info", "missing file"])
def test_tags_and_names_never_reach_the_terminal_raw(hostile_library, capsys, command):
    db, query = hostile_library
    capsys.readouterr()
    args = {
        "identify": ("identify", query),
        "tracklist": ("tracklist", query),
        "info": ("info",),
        "missing file": ("identify", query.with_name("gone\n\x1b.wav")),
    }
    nfp(*args[command], "--db", db)  # fmt: skip
    out, err = capsys.readouterr()
    assert_printable(out + err)
    if command == "missing file":
        assert len(err.strip().splitlines()) == 1 and "gone\\x0a\\x1b.wav" in err
    if command in ("identify", "tracklist"):
        assert "Artist\\x0anfp: error: fake – Title\\x1b[2J" in out, out


def test_identify_and_tracklist_name_a_track_alike(db, query, capsys):
    assert nfp("identify", query, "--db", db) == 0
    assert nfp("tracklist", query, "--db", db) == 0
    identified, listed = capsys.readouterr().out.strip().splitlines()
    assert "Test Artist – Two at" in identified and "  Test Artist – Two  (from" in listed


def test_track_list_segments_never_overlap(db, music, tmp_path, capsys):
    one = load_audio(music / "album" / "one.flac")[: 12 * SAMPLE_RATE]
    two = load_audio(music / "album" / "two.mp3")[: 12 * SAMPLE_RATE]
    mix = write_audio(tmp_path / "mix.wav", np.concatenate([one, two]), SAMPLE_RATE)
    assert nfp("tracklist", mix, "--db", db, "--json") == 0
    tracks = json.loads(capsys.readouterr().out)["tracks"]
    assert [t["title"] for t in tracks] == ["One", "Two"]
    assert all(a["end_s"] <= b["start_s"] for a, b in itertools.pairwise(tracks))


@pytest.mark.parametrize("name", ["tcp:127.0.0.1:{port}", "pipe:0", "concat:x.wav|y.wav"])
def test_a_query_named_like_a_url_is_read_as_a_file(db, query, tmp_path, monkeypatch, capsys,
                                                    name):  # fmt: skip
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.setblocking(False)
        named = tmp_path / name.format(port=listener.getsockname()[1])
        shutil.copy(query, named)
        monkeypatch.chdir(tmp_path)
        assert nfp("identify", named.name, "--db", db, "--json") == 0
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody connected
    assert json.loads(capsys.readouterr().out)["match"]["title"] == "Two"


def test_a_query_that_is_no_file_is_refused_without_reading_it(db, tmp_path, capsys):
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    for path, kind in ((fifo, "a named pipe"), (Path("/dev/zero"), "a character device")):
        assert nfp("identify", path, "--db", db) == 1
        one_line_error(capsys, str(path), kind, "files only")
    with subprocess.Popen(["sleep", "30"], stdout=subprocess.PIPE) as writer:
        done = run_nfp("identify", "/dev/stdin", "--db", db, stdin=writer.stdout)
        writer.kill()
    assert_one_line(done, "/dev/stdin", "a named pipe")


def test_onnx_runtime_records_nothing_in_the_home_folder(db, query, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    done = run_nfp("identify", query, "--db", db, env={**os.environ, "HOME": str(home)})
    assert done.returncode == 0, done.stderr
    assert list(home.rglob("*")) == [] and done.stderr == ""


# ---- never a traceback: bad settings, derived files, faults -----------------------------------
@pytest.mark.parametrize("value", ["0", "abc", "²", "-1"])
def test_a_bad_thread_count_is_one_line(db, query, capsys, monkeypatch, value):
    monkeypatch.setenv("NFP_THREADS", value)
    assert nfp("identify", query, "--db", db) == 1
    one_line_error(capsys, "NFP_THREADS=", "expected a number of threads")


def test_a_huge_thread_count_is_capped_at_the_cores(monkeypatch):
    from engine.core.threads import usable_cores

    monkeypatch.setenv("NFP_THREADS", "99999")
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_too_many_workers_is_a_usage_error(music, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        nfp("index", music, "--db", tmp_path / "db", "--workers", "1000")
    assert exit_.value.code == 2 and "this machine's cores" in capsys.readouterr().err
    assert not (tmp_path / "db").exists()


FAISS_META = {
    "a list": [1, 2],
    "a string": "Flat",
    "wrong types": {"spec": 7, "n_vectors": "many", "d": None, "store": [], "trained_on": 1},
    "negative count": {"spec": "Flat", "n_vectors": -5, "d": 128, "store": "", "trained_on": 0},
    "not UTF-8": None,
}


@pytest.mark.parametrize("case", FAISS_META)
def test_a_faiss_json_of_the_wrong_shape_is_rebuilt(db, music, query, capsys, case):
    meta = db / "faiss.json"
    if FAISS_META[case] is None:
        meta.write_bytes(b"\xff\xfe{")
    else:
        meta.write_text(json.dumps(FAISS_META[case]))
    assert nfp("info", "--db", db) == 0
    assert nfp("identify", query, "--db", db, "--json") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["match"]["title"] == "Two"
    assert nfp("index", music, "--db", db, "--rebuild") == 0
    assert "Traceback" not in capsys.readouterr().err


def test_a_full_disk_ends_indexing_with_one_line(music, tmp_path, capsys, monkeypatch):
    from engine.library.store import VectorStore

    def full(self, raw):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VectorStore, "append_raw", full)
    assert nfp("index", music, "--db", tmp_path / "db") == 1
    one_line_error(capsys, str(tmp_path / "db"), "No space left on device")


@pytest.mark.parametrize("record", ["0", "64", "4096", "99999999999"])
def test_a_tampered_width_is_refused_and_never_repaired_into_garbage(db, music, query, capsys,
                                                                      record):  # fmt: skip
    rows = rows_file(db).read_bytes()
    tamper_meta("d", record)(db)
    for args in (("identify", query), ("info",), ("index", music)):
        assert nfp(*args, "--db", db) == 1
        one_line_error(capsys, str(db), "record d=", "--rebuild")
    assert rows_file(db).read_bytes() == rows  # nothing was cut off or rewritten
    assert nfp("index", music, "--db", db, "--rebuild") == 0
    assert nfp("info", "--db", db) == 0


def test_the_torch_backend_without_torch_is_one_line(db, query, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    shutil.copy(NO_TORCH, hook / "sitecustomize.py")
    env = {**os.environ, "PYTHONPATH": str(hook), "NFP_BACKEND": "torch"}
    assert_one_line(run_nfp("identify", query, "--db", db, env=env), "NFP_BACKEND=torch",
                    "pip install 'nfp[train]'")  # fmt: skip


def test_the_desktop_command_without_qt_names_the_extra(tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(NO_TORCH.read_text().replace("torch", "PySide6"))
    done = subprocess.run([sys.executable, "-m", "nfp_desktop.launch"], cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(hook)}, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "pip install 'nfp[gui]'" in done.stderr


def test_a_scheduler_that_answers_garbage_is_one_line(db, query, capsys, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr("engine.library.parallel.CONNECT_TIMEOUT_S", 2)
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        address = f"tcp://127.0.0.1:{server.getsockname()[1]}"
        answering = threading.Thread(target=_answer_garbage, args=(server,), daemon=True)
        answering.start()
        assert nfp("identify", query, "--db", db, "--scheduler", address) == 1
    one_line_error(capsys, f"{address}: cannot reach the Dask scheduler")


def _answer_garbage(server: socket.socket) -> None:
    """Answer every connection with bytes that claim a frame of 3 EiB, until the server closes."""
    with contextlib.suppress(OSError):
        while True:
            conn, _ = server.accept()
            with conn:
                conn.sendall(b"\xff" * 64)


# ---- hangs and runaways: catalogues that are no files ------------------------------------------
def test_a_catalogue_that_is_no_list_is_one_line(db, query, tmp_path, capsys):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = tmp_path / "huge"
    huge.write_bytes(b"x" * (2 << 20))
    for catalogue, cause in ((fifo, "named pipe"), (Path("/dev/zero"), "character device"),
                             (huge, "not a list of libraries")):  # fmt: skip
        assert nfp("identify", query, "--catalogue", catalogue) == 1
        one_line_error(capsys, str(catalogue), cause)


def test_a_library_listed_twice_is_searched_once(db, query, tmp_path, capsys):
    catalogue = tmp_path / "catalogue"
    catalogue.write_text(f"{db}\n" * 20)
    assert nfp("identify", query, "--catalogue", catalogue, "--json") == 0
    assert json.loads(capsys.readouterr().out)["match"]["title"] == "Two"


# ---- wrong words: remove, info, damaged libraries ----------------------------------------------
def test_remove_understands_a_folder_inside_the_library(db, music, capsys):
    assert nfp("remove", music / "album", "--db", db) == 0
    assert "removed 2 tracks" in capsys.readouterr().out
    for folder, cause in ((music / "album", "no track there"),
                          (music / "nothing", "no track there"),
                          (Path("/"), "not one of the library's music folders")):  # fmt: skip
        assert nfp("remove", folder, "--db", db) == 1
        one_line_error(capsys, str(folder), cause, "nothing was removed")


def test_remove_of_a_folder_around_the_library_keeps_the_skip_records(db, music, capsys):
    (music / "broken.mp3").write_bytes(b"garbage")
    assert nfp("index", music, "--db", db) == 0
    assert nfp("remove", "/", "--db", db) == 1
    with Library(db, writable=False) as library:
        assert [Path(p).name for p, _ in library.skipped()] == ["broken.mp3"]
        assert len(library) == 3


def test_info_reads_a_library_made_before_row_checksums(db, capsys):
    old = sqlite3.connect(db / "tracks.sqlite")
    with old:
        old.execute("ALTER TABLE tracks DROP COLUMN rows_hash")
    old.close()
    assert nfp("info", "--db", db) == 0


@pytest.mark.parametrize("case", ["huge committed_rows", "another checkpoint's library"])
def test_info_refuses_what_identify_refuses_naming_the_rebuild(db, music, query, capsys, case):
    tampers = {
        "huge committed_rows": tamper_meta("committed_rows", str(10**12)),
        "another checkpoint's library": tamper_meta("fingerprints_sha256", "0" * 64),
    }
    tampers[case](db)  # fmt: skip
    for args in (("identify", query), ("info",)):
        assert nfp(*args, "--db", db) == 1
        repair = one_line_error(capsys, str(db)).split(" with: ")[1]
        assert repair.startswith(f"nfp index {music}")
    if case == "another checkpoint's library":
        assert repair.endswith("--rebuild")
        assert nfp(*repair.split()[1:]) == 0 and nfp("info", "--db", db) == 0


def test_an_unloadable_recorded_checkpoint_falls_back_to_the_shipped_same_weights(
    music, query, tmp_path, capsys
):
    shipped = default_checkpoint_path()
    copy = copy_checkpoint(shipped, tmp_path / "copy.pt")
    assert nfp("index", music, "--db", tmp_path / "db", "--checkpoint", copy) == 0
    copy.write_bytes(b"damaged")
    assert nfp("identify", query, "--db", tmp_path / "db", "--json") == 0
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["match"]["title"] == "Two"
