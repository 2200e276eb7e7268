import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CONFIG, make_tiny_checkpoint

from engine.checkpoint import (
    CHECKPOINT_DIR_ENV,
    DEFAULT_CHECKPOINT,
    default_checkpoint_path,
    load_checkpoint,
    save_checkpoint,
    shipped_checkpoints,
)
from engine.encoders import EncoderConfig, build_encoder
from engine.errors import CheckpointError


def test_round_trip_rebuilds_the_same_model(tmp_path: Path):
    torch.manual_seed(3)
    model = build_encoder(TINY_CONFIG).eval()
    save_checkpoint(
        tmp_path / "c.pt",
        model,
        TINY_CONFIG,
        training={"steps": 7},
        evaluation={"calibration": {"evidence_threshold": {"9": 1.0}}},
    )
    loaded = load_checkpoint(tmp_path / "c.pt")
    assert loaded.config == TINY_CONFIG and loaded.d == 64
    assert loaded.training == {"steps": 7}
    assert loaded.evaluation["calibration"]["evidence_threshold"] == {"9": 1.0}
    x = torch.randn(2, 1, 256, 32)
    torch.testing.assert_close(loaded.model(x), model(x))
    assert len(loaded.sha256) == 64


def test_background_travels_as_float16_and_a_misfit_is_refused(tmp_path: Path):
    model = build_encoder(TINY_CONFIG)
    background = np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)
    save_checkpoint(tmp_path / "c.pt", model, TINY_CONFIG, background=background)
    loaded = load_checkpoint(tmp_path / "c.pt").background
    assert loaded.dtype == np.float32 and loaded.shape == (40, 64)
    np.testing.assert_allclose(loaded, background, rtol=1e-3, atol=1e-3)
    assert load_checkpoint(make_tiny_checkpoint(tmp_path / "none.pt")).background is None
    save_checkpoint(tmp_path / "bad.pt", model, TINY_CONFIG, background=background[:, :32])
    with pytest.raises(CheckpointError, match=r"bad.pt: .*background fingerprints"):
        load_checkpoint(tmp_path / "bad.pt")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"format_version": 1, "state_dict": {}, "payload": RunsCode()}, f)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()


def test_a_plain_pickle_is_refused(tmp_path: Path):
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps(RunsCode()))
    with pytest.raises(CheckpointError, match="plain.pt"):
        load_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"garbage" * 10])
def test_corrupt_checkpoint_names_the_file(tmp_path: Path, content: bytes):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(path)


def test_wrong_weights_are_reported(tmp_path: Path):
    path = make_tiny_checkpoint(tmp_path / "tiny.pt")
    payload = torch.load(path, weights_only=True)
    payload["encoder_config"]["d"] = 128  # weights are for d=64
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path: Path):
    with pytest.raises(CheckpointError, match="file not found"):
        load_checkpoint(tmp_path / "none.pt")


def test_shipped_checkpoints_are_found_default_first(tmp_path: Path, monkeypatch):
    monkeypatch.setenv(CHECKPOINT_DIR_ENV, str(tmp_path))
    make_tiny_checkpoint(tmp_path / "aaa.pt")
    make_tiny_checkpoint(tmp_path / DEFAULT_CHECKPOINT)
    assert [p.name for p in shipped_checkpoints()] == [DEFAULT_CHECKPOINT, "aaa.pt"]
    assert default_checkpoint_path() == tmp_path / DEFAULT_CHECKPOINT


def test_the_repository_ships_a_loadable_default():
    checkpoint = load_checkpoint(default_checkpoint_path())
    assert checkpoint.d == 128 and isinstance(checkpoint.config, EncoderConfig)


def test_self_test_finds_the_planted_excerpt_with_the_shipped_checkpoint():
    from engine.selftest import run_self_test

    report = run_self_test()
    assert report["d"] == 128 and abs(report["match_offset_s"] - 6.0) <= 0.5
