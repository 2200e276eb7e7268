"""An export's background rows live beside it (NAME.background.npy, issue 24: decoding them from
the ONNX metadata took 0.035 s of each `nfp identify`), named in the export by their SHA-256:
a missing, damaged or foreign file is refused with the export's name and the cause, never
used; a .pt's export with such a file is made again; exports from before still load."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from engine.cli import main
from engine.core.errors import CheckpointError
from engine.model.load import export_cache_dir, load_checkpoint
from engine.model.onnx_backend import background_path, int8_path, load_onnx
from engine.model.torch_backend import load_torch
from tests.support.tiny import make_tiny_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny .pt with 64 background rows, and its export beside it (made by `nfp export`)."""
    pt = tmp_path_factory.mktemp("background") / "tiny.pt"
    rows = np.random.default_rng(8).standard_normal((64, 64)).astype(np.float32)
    make_tiny_checkpoint(pt, seed=13, background=rows / np.linalg.norm(rows, axis=1)[:, None])
    assert main(["export", str(pt)]) == 0
    return pt


@pytest.fixture
def copied(exported: Path, tmp_path: Path) -> Path:
    """A copy of the .pt, its export and the export's background rows, for this test to change."""
    export = exported.with_suffix(".onnx")
    for path in (exported, export, background_path(export)):
        shutil.copy(path, tmp_path / path.name)
    return tmp_path / exported.name


def test_the_background_rows_are_beside_the_export_and_named_in_it(exported: Path):
    export = exported.with_suffix(".onnx")
    assert sorted(p.name for p in exported.parent.iterdir()) == [
        "tiny.background.npy", "tiny.onnx", "tiny.pt",
    ]  # fmt: skip
    meta = {p.key: p.value for p in onnx.load(str(export)).metadata_props}
    assert set(json.loads(meta["nfp.background"])) == {"sha256"}
    loaded, stored = load_onnx(export, source=exported), load_torch(exported)
    np.testing.assert_array_equal(loaded.background, stored.background)
    assert background_path(int8_path(export)) == background_path(export)  # the twin's too


@pytest.mark.parametrize(
    ("damage", "cause"),
    [
        (lambda rows: rows.unlink(), "tiny.background.npy are missing"),
        (lambda rows: rows.write_bytes(rows.read_bytes()[:-64]), "not the ones it was exported"),
        (lambda rows: rows.write_bytes(b"\x93NUMPY garbage"), "not the ones it was exported"),
    ],
    ids=["missing", "cut short", "foreign"],
)
def test_an_export_without_its_own_background_rows_is_refused(copied: Path, damage, cause: str):
    export = copied.with_suffix(".onnx")
    damage(background_path(export))
    with pytest.raises(CheckpointError, match=f"^{export}: not a usable .*{cause}"):
        load_checkpoint(export)


def test_a_pt_whose_export_lost_its_background_rows_gets_a_fresh_export(
    copied: Path, caplog: pytest.LogCaptureFixture
):
    background_path(copied.with_suffix(".onnx")).write_bytes(b"")
    running = load_checkpoint(copied)
    assert running.onnx_path.parent == export_cache_dir()
    assert background_path(running.onnx_path).is_file()
    assert running.background is not None and running.background.shape == (64, 64)
    assert any("not the ones it was exported with" in r.getMessage() for r in caplog.records)


def test_a_file_named_by_a_tampered_hash_is_refused_as_not_rows(copied: Path):
    export = copied.with_suffix(".onnx")
    background_path(export).write_bytes(b"not a numpy file")
    model = onnx.load(str(export))
    for prop in model.metadata_props:
        if prop.key == "nfp.background":
            prop.value = json.dumps({"sha256": hashlib.sha256(b"not a numpy file").hexdigest()})
    onnx.save(model, str(export))
    with pytest.raises(CheckpointError, match="tiny.background.npy: not background rows"):
        load_onnx(export)


def test_an_export_with_its_background_in_its_metadata_still_loads(copied: Path):
    """As exports were made before the rows moved beside them."""
    export = copied.with_suffix(".onnx")
    rows = np.load(background_path(export))
    model = onnx.load(str(export))
    for prop in model.metadata_props:
        if prop.key == "nfp.background":
            data = base64.b64encode(rows.tobytes()).decode()
            prop.value = json.dumps({"dtype": rows.dtype.str, "shape": rows.shape, "data": data})
    onnx.save(model, str(export))
    background_path(export).unlink()
    np.testing.assert_array_equal(load_onnx(export).background, rows.astype(np.float32))
