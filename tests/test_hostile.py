"""The second hostile sweep (issue 23), through the `nfp` command: tampered libraries and exports,
hostile names and paths, bad settings. Every case asserts the exit status, one line on stderr
naming the file and the cause, no traceback, and nothing written outside the library.
docs/reliability.md maps each promise to its test here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import make_tiny_checkpoint
from library_helpers import nfp, one_line_error, rows_file
from onnx import numpy_helper

from engine.checkpoint import export_cache_dir, file_sha256, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
NO_TORCH = Path(__file__).with_name("no_torch.py")


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


def edit_metadata(key: str, edit: Callable[[dict], object]) -> Callable[[onnx.ModelProto], None]:
    def tamper(model: onnx.ModelProto) -> None:
        for prop in model.metadata_props:
            if prop.key == "nfp." + key:
                prop.value = json.dumps(edit(json.loads(prop.value)))

    return tamper


def zero_background(encoded: dict) -> dict:
    rows = np.zeros(encoded["shape"], np.dtype(encoded["dtype"]))
    import base64

    return {**encoded, "data": base64.b64encode(rows.tobytes()).decode()}


def flip_weights(model: onnx.ModelProto) -> None:
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    weights = numpy_helper.to_array(biggest)
    biggest.CopyFrom(numpy_helper.from_array(-weights[::-1].copy(), biggest.name))


TAMPERED_EXPORTS = {
    "thresholds near zero": edit_metadata(
        "evaluation", lambda e: {"calibration": {"evidence_threshold": {"9": 1e-6}}}
    ),
    "background zeroed": edit_metadata("background", zero_background),
    "flipped weights": flip_weights,
}


@pytest.fixture(params=TAMPERED_EXPORTS)
def tampered(request, exported: Path, tmp_path: Path) -> Path:
    """A copy of the .pt whose export beside it was edited."""
    pt = Path(shutil.copy(exported, tmp_path / exported.name))
    model = onnx.load(str(exported.with_suffix(".onnx")))
    TAMPERED_EXPORTS[request.param](model)
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
