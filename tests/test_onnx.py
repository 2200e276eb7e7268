"""Inference on ONNX Runtime: the shipped exports are current and right, a .pt without one is
exported on first use, a stale or damaged export is never used, and the `nfp` command and the
desktop app run with torch made unimportable."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from engine.cli import main
from engine.core.audio import SAMPLE_RATE, load_audio
from engine.core.errors import CheckpointError
from engine.library.index import VectorIndex
from engine.model.checkpoint import default_checkpoint_path, file_sha256, shipped_checkpoints
from engine.model.export import save_checkpoint
from engine.model.fingerprint import Fingerprinter
from engine.model.load import BACKEND_ENV, export_cache_dir, load_checkpoint, requested_backend
from engine.model.onnx_backend import load_onnx
from engine.model.probe import min_cosine
from engine.model.torch_backend import load_torch
from tests.support.audio_files import music_like, write_audio
from tests.support.tiny import make_tiny_checkpoint

REPO = Path(__file__).resolve().parents[1]
NO_TORCH = Path(__file__).parent / "support" / "no_torch.py"
WESNOTH = Path("/usr/share/games/wesnoth/1.16/data/core/music")


@pytest.mark.parametrize("pt", shipped_checkpoints(), ids=lambda p: p.name)
def test_every_shipped_checkpoint_has_a_current_export_bound_to_the_same_weights(pt: Path):
    """`nfp export` was run after the .pt last changed (save_checkpoint re-exports)."""
    assert load_onnx(pt.with_suffix(".onnx")).sha256 == file_sha256(pt)
    engine, torch_run = load_checkpoint(pt), load_torch(pt)
    assert engine.backend == "onnx" and engine.onnx_path == pt.with_suffix(".onnx")
    assert engine.path == pt and engine.sha256 == torch_run.sha256
    assert engine.weights_sha256 == torch_run.weights_sha256
    assert engine.evaluation == json.loads(json.dumps(torch_run.evaluation))
    np.testing.assert_array_equal(engine.reference, torch_run.reference)
    np.testing.assert_array_equal(engine.background, torch_run.background)


def _real_music() -> np.ndarray:
    """Two minutes of real music (Wesnoth's, installed by scripts/setup.sh), else generated."""
    tracks = sorted(WESNOTH.glob("*.ogg"))[:2] if WESNOTH.is_dir() else []
    if not tracks:
        return music_like(120.0, SAMPLE_RATE, 5)
    return np.concatenate([load_audio(t)[: 60 * SAMPLE_RATE] for t in tracks])


def test_both_backends_give_the_same_fingerprints_and_neighbours_on_real_music():
    audio = _real_music()
    onnx = Fingerprinter(load_checkpoint(default_checkpoint_path(), backend="onnx")).audio(audio)
    exact = Fingerprinter(load_checkpoint(default_checkpoint_path(), backend="torch"),
                          precision="float32").audio(audio)  # fmt: skip
    assert min_cosine(onnx, exact) >= 0.999
    index = VectorIndex.build(exact, "Flat")
    rng = np.random.default_rng(0)
    noisy = audio + 0.05 * rng.standard_normal(len(audio)).astype(np.float32)
    queries = Fingerprinter(load_checkpoint(default_checkpoint_path())).audio(noisy)
    queries_torch = Fingerprinter(load_checkpoint(default_checkpoint_path(), "torch")).audio(noisy)
    found, found_torch = index.search(queries, 1)[1][:, 0], index.search(queries_torch, 1)[1][:, 0]
    # Where they differ, it is a tie: two stored segments (a neighbour, a repeat of a loop)
    # that the query matches equally well, to the backends' last bits.
    differ = found != found_torch
    assert differ.mean() <= 0.02
    gap = np.einsum("ld,ld->l", queries[differ], exact[found[differ]] - exact[found_torch[differ]])
    assert np.abs(gap).max(initial=0.0) < 5e-3


@pytest.mark.parametrize("pt", shipped_checkpoints(), ids=lambda p: p.name)
def test_the_shipped_exports_run_the_fast_forms_with_torchs_values(pt: Path):
    """The forms an export takes (engine.model.encoders.export_forms) keep torch's numbers:
    fingerprints of real music within cosine 0.99999 of torch float32's, so libraries and the
    accuracy harness's figures stay valid; and none of the operators ONNX Runtime runs slowly
    (Elu, Pow) is left in the graph."""
    operators = {node.op_type for node in onnx.load(pt.with_suffix(".onnx")).graph.node}
    assert not operators & {"Elu", "Pow"}
    audio = _real_music()
    onnx_run = Fingerprinter(load_checkpoint(pt, backend="onnx")).audio(audio)
    exact = Fingerprinter(load_checkpoint(pt, backend="torch"), precision="float32").audio(audio)
    assert min_cosine(onnx_run, exact) >= 0.99999


def test_a_pt_without_an_export_is_exported_on_first_use_and_cached(tmp_path):
    pt = make_tiny_checkpoint(tmp_path / "mine.pt", seed=4)
    checkpoint = load_checkpoint(pt)
    assert checkpoint.backend == "onnx" and checkpoint.path == pt
    assert checkpoint.onnx_path.parent == export_cache_dir()
    assert not pt.with_suffix(".onnx").exists()  # the user's folder is left as it was
    assert load_checkpoint(pt).onnx_path == checkpoint.onnx_path  # cached: not exported again
    assert checkpoint.weights_sha256 == load_torch(pt).weights_sha256


def test_a_resaved_checkpoint_gets_its_export_renewed_and_a_stale_one_is_not_used(tmp_path):
    pt = make_tiny_checkpoint(tmp_path / "c.pt", seed=5)
    assert main(["export", str(pt)]) == 0
    stale = tmp_path / "stale.onnx"
    shutil.copy(pt.with_suffix(".onnx"), stale)
    model = load_torch(pt).model
    save_checkpoint(pt, model, load_torch(pt).config, evaluation={"note": "renewed"})
    assert load_onnx(pt.with_suffix(".onnx")).sha256 == file_sha256(pt)
    assert load_checkpoint(pt).evaluation == {"note": "renewed"}
    shutil.copy(stale, pt.with_suffix(".onnx"))  # an export left from before the .pt changed
    renewed = load_checkpoint(pt)
    assert renewed.evaluation == {"note": "renewed"} and renewed.onnx_path != pt.with_suffix(
        ".onnx"
    )


@pytest.mark.parametrize(
    ("content", "cause"),
    [(b"", "unreadable ONNX model"), (b"\x08\x07garbage", "unreadable ONNX model")],
)
def test_a_damaged_export_is_refused_with_its_name(tmp_path, content: bytes, cause: str):
    path = tmp_path / "damaged.onnx"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"damaged.onnx: .*{cause}"):
        load_checkpoint(path)


def test_an_onnx_model_that_is_not_an_nfp_export_is_refused(tmp_path):
    path = tmp_path / "foreign.onnx"
    program = torch.onnx.export(torch.nn.Linear(4, 2), (torch.zeros(1, 4),), dynamo=True)
    path.write_bytes(program.model_proto.SerializeToString())
    with pytest.raises(CheckpointError, match="foreign.onnx: .*not an nfp export"):
        load_checkpoint(path)


def test_a_damaged_export_beside_a_pt_is_passed_over(tmp_path):
    pt = make_tiny_checkpoint(tmp_path / "c.pt", seed=6)
    pt.with_suffix(".onnx").write_bytes(b"not onnx")
    assert load_checkpoint(pt).onnx_path.parent == export_cache_dir()


def test_the_backend_override_is_read_and_checked(monkeypatch, tmp_path):
    monkeypatch.setenv(BACKEND_ENV, "Torch")
    assert requested_backend() == "torch"
    assert load_checkpoint(default_checkpoint_path()).backend == "torch"
    monkeypatch.setenv(BACKEND_ENV, "tensorrt")
    with pytest.raises(CheckpointError, match="'tensorrt': expected one of auto, onnx, torch"):
        requested_backend()
    with pytest.raises(CheckpointError, match="ONNX Runtime"):
        load_checkpoint(default_checkpoint_path().with_suffix(".onnx"), backend="torch")


def test_a_library_indexed_on_torch_answers_the_same_on_onnx_runtime(tmp_path, music_dir):
    db = str(tmp_path / "db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(BACKEND_ENV, "torch")
        assert main(["index", str(music_dir), "--db", db]) == 0
    query = tmp_path / "query.wav"
    audio = load_audio(music_dir / "album" / "two.mp3")[5 * SAMPLE_RATE : 11 * SAMPLE_RATE]
    write_audio(query, audio, SAMPLE_RATE)
    answers = {}
    for backend in ("torch", "onnx"):
        out = _run_nfp(["identify", str(query), "--db", db, "--json"], backend=backend)
        answers[backend] = json.loads(out)["match"]
    assert answers["onnx"]["title"] == "Two" and abs(answers["onnx"]["offset_s"] - 5.0) <= 0.5
    assert answers["torch"]["offset_s"] == answers["onnx"]["offset_s"]
    assert abs(answers["torch"]["confidence"] - answers["onnx"]["confidence"]) <= 0.01


def _no_torch_env(tmp_path: Path) -> dict[str, str]:
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    shutil.copy(NO_TORCH, hook / "sitecustomize.py")
    return {**os.environ, "PYTHONPATH": str(hook), "QT_QPA_PLATFORM": "offscreen"}


def _run_nfp(args: list[str], backend: str = "auto", env: dict | None = None) -> str:
    env = {**(env or os.environ), BACKEND_ENV: backend}
    done = subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_nfp_index_identify_and_info_run_with_torch_unimportable(tmp_path, music_dir):
    env = _no_torch_env(tmp_path)
    check = [sys.executable, "-c", "import torch"]
    assert subprocess.run(check, env=env, capture_output=True).returncode != 0
    db = str(tmp_path / "db")
    _run_nfp(["index", str(music_dir), "--db", db], env=env)
    query = tmp_path / "query.wav"
    audio = load_audio(music_dir / "three.ogg")[4 * SAMPLE_RATE : 10 * SAMPLE_RATE]
    write_audio(query, audio, SAMPLE_RATE)
    found = json.loads(_run_nfp(["identify", str(query), "--db", db, "--json"], env=env))["match"]
    assert found["title"] == "Three" and abs(found["offset_s"] - 4.0) <= 0.5
    info = json.loads(_run_nfp(["info", "--db", db, "--json"], env=env))
    assert info["backend"] == "onnx" and info["reference"]["ok"]


def test_a_pt_without_an_export_says_what_to_do_when_torch_is_missing(tmp_path):
    pt = make_tiny_checkpoint(tmp_path / "new.pt", seed=7)
    env = {**_no_torch_env(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "empty-cache")}
    done = subprocess.run(
        [sys.executable, "-m", "engine.cli", "index", str(tmp_path), "--db", str(tmp_path / "db"),
         "--checkpoint", str(pt)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"{pt}: " in done.stderr and f"run `nfp export {pt}`" in done.stderr


@pytest.mark.gui
def test_the_desktop_self_test_runs_with_torch_unimportable_and_leaves_no_files(tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**_no_torch_env(tmp_path), "TMPDIR": str(scratch)}
    done = subprocess.run(
        [sys.executable, "-m", "nfp_desktop.app", "--self-test"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "onnx" in done.stdout
    assert list(scratch.iterdir()) == []  # its settings folder went with it
