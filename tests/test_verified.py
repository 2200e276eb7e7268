"""An export verified against its .pt is not verified again on every load (issue 24): a stamp
names both files' contents, so a change to either is verified anew, and a damaged or unwritable
stamp cache costs only the time to verify again."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import engine.model.load
from engine.cli import main
from engine.model.load import export_cache_dir, load_checkpoint
from engine.model.verified import stamp_dir
from tests.support.tiny import make_tiny_checkpoint


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[Path]:
    """The exports verify_export is run on from here, with a stamp cache of this test's own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: list[Path] = []
    verify = engine.model.load.verify_export

    def counted(export, source):
        calls.append(export.onnx_path)
        verify(export, source)

    monkeypatch.setattr(engine.model.load, "verify_export", counted)
    return calls


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two tiny .pt files, each with its export beside it (made by `nfp export`)."""
    folder = tmp_path_factory.mktemp("exports")
    pts = [make_tiny_checkpoint(folder / f"tiny{seed}.pt", seed=seed) for seed in (21, 22)]
    assert main(["export", *map(str, pts)]) == 0
    return pts


def _copy(pt: Path, folder: Path) -> Path:
    for path in (pt, pt.with_suffix(".onnx")):
        shutil.copy(path, folder / path.name)
    return folder / pt.name


@pytest.fixture
def exported(exports: list[Path], tmp_path: Path) -> Path:
    """A copy of the first .pt and its export, for this test to change."""
    return _copy(exports[0], tmp_path)


def test_a_verified_export_is_not_verified_again(exported: Path, verifications: list[Path]):
    first, second = load_checkpoint(exported), load_checkpoint(exported)
    assert first.onnx_path == second.onnx_path == exported.with_suffix(".onnx")
    assert verifications == [exported.with_suffix(".onnx")]
    assert len(list(stamp_dir().glob("*.json"))) == 1
    np.testing.assert_array_equal(first.reference, second.reference)


def test_an_export_edited_after_its_stamp_is_verified_again_and_refused(
    exported: Path, verifications: list[Path], caplog: pytest.LogCaptureFixture
):
    beside = exported.with_suffix(".onnx")
    load_checkpoint(exported)
    model = onnx.load(str(beside))  # flip the weights; the metadata still names the same .pt
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    biggest.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(biggest), biggest.name))
    onnx.save(model, str(beside))
    running = load_checkpoint(exported)
    assert verifications == [beside, beside]
    assert running.onnx_path.parent == export_cache_dir()  # a fresh export, made with torch
    assert any("its network disagrees" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "damage",
    [b"", b"\xff\xfe not text", b'{"version": 1}', b"[]"],
    ids=["empty", "binary", "partial", "foreign"],
)
def test_a_damaged_stamp_is_not_trusted_and_is_renewed(
    exported: Path, verifications: list[Path], damage: bytes
):
    load_checkpoint(exported)
    (stamp,) = stamp_dir().glob("*.json")
    good = stamp.read_bytes()
    stamp.write_bytes(damage)
    load_checkpoint(exported)
    assert len(verifications) == 2
    assert stamp.read_bytes() == good
    load_checkpoint(exported)
    assert len(verifications) == 2


def test_a_stamp_of_another_export_is_not_trusted(
    exported: Path, exports: list[Path], verifications: list[Path]
):
    """A stamp moved into another's name (as a file system could mix them up) says so inside."""
    load_checkpoint(exported)
    other = _copy(exports[1], exported.parent)
    (stamp,) = stamp_dir().glob("*.json")
    stamp.rename(stamp_dir() / "moved.json")
    load_checkpoint(other)
    (renewed,) = set(stamp_dir().glob("*.json")) - {stamp_dir() / "moved.json"}
    (stamp_dir() / "moved.json").replace(renewed)  # other's name, exported's content
    load_checkpoint(other)
    assert verifications == [exported.with_suffix(".onnx")] + [other.with_suffix(".onnx")] * 2


def test_an_unwritable_stamp_cache_only_costs_the_verification(
    exported: Path, verifications: list[Path]
):
    stamp_dir().parent.mkdir(parents=True, exist_ok=True)
    stamp_dir().write_text("a file where the folder should be")
    for _ in range(2):
        assert load_checkpoint(exported).onnx_path == exported.with_suffix(".onnx")
    assert len(verifications) == 2
