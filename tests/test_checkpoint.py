import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.core.errors import CheckpointError
from engine.model.checkpoint import (
    CHECKPOINT_DIR_ENV,
    DEFAULT_CHECKPOINT,
    default_checkpoint_path,
    shipped_checkpoints,
)
from engine.model.encoders import EncoderConfig, build_encoder
from engine.model.export import save_checkpoint
from engine.model.load import load_checkpoint
from engine.model.torch_backend import load_torch
from engine.query.search import evidence_threshold
from tests.support.tiny import TINY_CONFIG, make_tiny_checkpoint


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
    loaded = load_torch(tmp_path / "c.pt")
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
    loaded = load_torch(tmp_path / "c.pt").background
    assert loaded.dtype == np.float32 and loaded.shape == (40, 64)
    np.testing.assert_allclose(loaded, background, rtol=1e-3, atol=1e-3)
    assert load_torch(make_tiny_checkpoint(tmp_path / "none.pt")).background is None
    save_checkpoint(tmp_path / "bad.pt", model, TINY_CONFIG, background=background[:, :32])
    with pytest.raises(CheckpointError, match=r"bad.pt: .*background fingerprints"):
        load_torch(tmp_path / "bad.pt")


def test_a_calibration_counting_more_rooms_than_background_rows_is_refused(tmp_path: Path):
    model = build_encoder(TINY_CONFIG)
    background = np.random.default_rng(0).standard_normal((40, 64)).astype(np.float32)
    for rooms, fine in ((30, True), (40, False)):
        scoring = {"evidence_threshold": {"9": 1.0}, "scoring": {"room_rows": rooms}}
        save_checkpoint(tmp_path / "c.pt", model, TINY_CONFIG,
                        evaluation={"calibration": scoring}, background=background)  # fmt: skip
        if fine:
            assert load_torch(tmp_path / "c.pt").background.shape == (40, 64)
            continue
        with pytest.raises(CheckpointError, match="counts 40 background rows of rooms"):
            load_torch(tmp_path / "c.pt")


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_CHECKPOINT",))


def test_a_checkpoint_that_runs_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        torch.save({"format_version": 1, "state_dict": {}, "payload": RunsCode()}, f)
    with pytest.raises(CheckpointError, match="evil.pt") as refused:
        load_torch(path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    message = str(refused.value)
    assert "refused: it contains code" in message and "\n" not in message
    # torch's own message advises exactly what must never be done with an untrusted file
    assert "weights_only=False" not in message and "set to `False`" not in message


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_a_plain_pickle_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, protocol: int):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps(RunsCode(), protocol=protocol))
    with pytest.raises(CheckpointError, match="plain.pt") as refused:
        load_torch(path)
    assert not (tmp_path / "PWNED_BY_CHECKPOINT").exists()
    assert "weights_only=False" not in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize(
    ("content", "cause"),
    [(b"", "the file ends early"), (b"garbage" * 10, "not written by torch.save, or damaged")],
)
def test_corrupt_checkpoint_names_the_file(tmp_path: Path, content: bytes, cause: str):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"bad.pt: .*{cause}"):
        load_torch(path)


def _set(key: str, value: object):
    def tamper(payload: dict) -> dict:
        payload[key] = value
        return payload

    return tamper


def _set_config(key: str, value: object):
    def tamper(payload: dict) -> dict:
        payload["encoder_config"][key] = value
        return payload

    return tamper


def _set_thresholds(table: object):
    return _set("evaluation", {"calibration": {"evidence_threshold": table}})


MALFORMED = {
    "payload a list": (lambda payload: [payload], "holds a list"),
    "payload a tensor": (lambda payload: torch.zeros(3), "holds a Tensor"),
    "format version a tensor": (_set("format_version", torch.ones(4)), "format version a Tensor"),
    "config missing": (_set("encoder_config", None), "encoder_config is a NoneType"),
    "config a list": (_set("encoder_config", ["scnn", 64]), "encoder_config is a list"),
    "config a string": (_set("encoder_config", "scnn"), "encoder_config is a str"),
    "d zero": (_set_config("d", 0), "d = 0"),
    "d negative": (_set_config("d", -64), "d = -64"),
    "d a float": (_set_config("d", 64.0), "d = 64.0"),
    "d a string": (_set_config("d", "64"), "d = '64'"),
    "d a bool": (_set_config("d", True), "d = True"),
    "d absurd": (_set_config("d", 10**9), "d = 1000000000"),
    "unknown encoder": (_set_config("name", "xnet"), "unknown encoder 'xnet'; known: attn_lstm"),
    "encoder name a list": (_set_config("name", ["scnn"]), "unknown encoder a list"),
    "width zero": (_set_config("width", 0.0), "width = 0.0"),
    "width negative": (_set_config("width", -1), "width = -1"),
    "width absurd": (_set_config("width", 1e6), "width = 1000000.0"),
    "width nan": (_set_config("width", float("nan")), "width = nan"),
    "width a string": (_set_config("width", "wide"), "width = 'wide'"),
    "unknown projection": (_set_config("projection", "magic"), "unknown projection 'magic'"),
    "state_dict a list": (_set("state_dict", [1, 2]), "state_dict is a list"),
    "state_dict of strings": (_set("state_dict", {"w": "x"}), "state_dict entry 'w'"),
    "state_dict missing": (_set("state_dict", None), "state_dict is a NoneType"),
    "training a list": (_set("training", [1]), "training is a list"),
    "evaluation a string": (_set("evaluation", "good"), "evaluation is a str"),
    "calibration a string": (_set("evaluation", {"calibration": "x"}), "calibration is a str"),
    "calibration a list": (_set("evaluation", {"calibration": [1]}), "calibration is a list"),
    "thresholds a list": (_set_thresholds([1.0, 2.0]), "a list, not a mapping"),
    "thresholds a tensor": (_set_thresholds(torch.ones(3)), "a Tensor, not a mapping"),
    "threshold key not a number": (_set_thresholds({"nine": 1.0}), "segment count 'nine'"),
    "threshold key zero": (_set_thresholds({"0": 1.0}), "segment count '0'"),
    "threshold key negative": (_set_thresholds({-3: 1.0}), "segment count -3"),
    "threshold key a float": (_set_thresholds({1.5: 1.0}), "segment count 1.5"),
    "threshold value a string": (_set_thresholds({"9": "1.0"}), "threshold '1.0' for '9'"),
    "threshold value zero": (_set_thresholds({"9": 0.0}), "threshold 0.0"),
    "threshold value negative": (_set_thresholds({"9": -1.0}), "threshold -1.0"),
    "threshold value infinite": (_set_thresholds({"9": float("inf")}), "threshold inf"),
    "threshold value nan": (_set_thresholds({"9": float("nan")}), "threshold nan"),
    "background a list": (_set("background", [[0.0] * 64]), "background fingerprints"),
    "background 1-D": (_set("background", torch.zeros(64)), "background fingerprints"),
    "background wrong d": (_set("background", torch.zeros(4, 32)), "not (rows, 64)"),
    "background not finite": (
        _set("background", torch.full((4, 64), float("nan"))),
        "background fingerprints are not finite",
    ),
    "background integers": (
        _set("background", torch.zeros(4, 64, dtype=torch.int64)),
        "background fingerprints are not finite",
    ),
}


@pytest.mark.parametrize(("tamper", "cause"), MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_checkpoint_is_refused_with_its_cause(tmp_path: Path, tamper, cause: str):
    path = make_tiny_checkpoint(tmp_path / "tampered.pt")
    torch.save(tamper(torch.load(path, weights_only=True)), path)
    with pytest.raises(CheckpointError) as refused:
        load_torch(path)
    message = str(refused.value)
    assert message.startswith(f"{path}: not a usable nfp checkpoint (")
    assert cause in message and "\n" not in message


@pytest.mark.parametrize(
    "evaluation",
    [
        {},
        {"calibration": None},
        {"calibration": {}},
        {"calibration": {"evidence_threshold": {}, "target_fpr": 0.01}},
        {"calibration": {"evidence_threshold": {"1": 0.3, 9: 1, "19": 1.6}}},
    ],
)
def test_calibrations_search_can_use_are_accepted(tmp_path: Path, evaluation: dict):
    path = make_tiny_checkpoint(tmp_path / "c.pt", evaluation=evaluation)
    calibration = load_torch(path).evaluation.get("calibration")
    assert 0 < evidence_threshold(5, calibration) < float("inf")


def test_wrong_weights_are_reported(tmp_path: Path):
    path = make_tiny_checkpoint(tmp_path / "tiny.pt")
    payload = torch.load(path, weights_only=True)
    payload["encoder_config"]["d"] = 128  # weights are for d=64
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_torch(path)


def test_missing_checkpoint(tmp_path: Path):
    with pytest.raises(CheckpointError, match="file not found"):
        load_torch(tmp_path / "none.pt")


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
