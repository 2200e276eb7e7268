"""The int8 twin of an export (engine.model.quantize): made by `nfp export --int8`, run only where
the probe passes on the machine that runs these tests, or where asked for (docs/architecture.md,
Numeric paths)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main
from engine.core.audio import SAMPLE_RATE
from engine.library.index import VectorIndex
from engine.model.checkpoint import default_checkpoint_path
from engine.model.fingerprint import Fingerprinter, require_reference
from engine.model.load import load_checkpoint
from engine.model.onnx_backend import Int8Twin, OnnxEncoder, int8_path, load_int8
from engine.model.probe import MIN_COSINE, min_cosine
from tests.support.audio_files import music_like
from tests.support.tiny import copy_checkpoint, make_tiny_checkpoint

pytest.importorskip("onnxruntime.quantization")  # needs the `onnx` package (the train extra)


@pytest.fixture(scope="module")
def with_twin(tmp_path_factory: pytest.TempPathFactory, music_dir: Path) -> Path:
    """A copy of the shipped default, its export and an int8 twin calibrated on music_dir."""
    from engine.model.quantize import calibration_mels, quantize_export

    folder = tmp_path_factory.mktemp("int8")
    pt = folder / default_checkpoint_path().name
    copy_checkpoint(default_checkpoint_path(), pt)
    assert quantize_export(pt.with_suffix(".onnx"), calibration_mels(music_dir)) == int8_path(
        pt.with_suffix(".onnx")
    )
    return pt


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return music_like(30.0, SAMPLE_RATE, 5)


def test_the_path_chosen_with_an_int8_twin_agrees_with_float32(with_twin, audio):
    """Whatever `auto` chose on this machine gives float32's fingerprints and neighbours."""
    chosen = Fingerprinter(load_checkpoint(with_twin), precision="auto")
    exact = Fingerprinter(load_checkpoint(with_twin), precision="float32")
    assert chosen.precision.chosen in ("float32", "int8") and chosen.precision.reason
    fast, reference = chosen.audio(audio), exact.audio(audio)
    assert min_cosine(fast, reference) >= MIN_COSINE
    index = VectorIndex.build(reference, "Flat")
    np.testing.assert_array_equal(index.search(fast, 1)[1], index.search(reference, 1)[1])


def test_an_int8_twin_that_fails_the_probe_is_not_used(with_twin, monkeypatch):
    original = OnnxEncoder.probe

    def probe(self, path):  # int8 gives every probe segment the same fingerprint
        return original(self, path) if path == "float32" else np.full((15, 128), 128**-0.5)

    monkeypatch.setattr(OnnxEncoder, "probe", probe)
    fingerprinter = Fingerprinter(load_checkpoint(with_twin), precision="auto")
    assert fingerprinter.precision.chosen == "float32"
    assert "int8 failed the probe" in fingerprinter.precision.reason


@pytest.fixture(autouse=True)
def own_stamps(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A stamp cache of each test's own: a verdict one test's probe left is not another's."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture
def stamps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths the probe is run on from here, made to pass whatever this CPU computes (each
    of a test's loads is another session: probed anew unless remembered)."""
    probed: list[str] = []
    original = OnnxEncoder.probe

    def probe(self, path):
        probed.append(path)
        return original(self, "float32")

    monkeypatch.setattr(OnnxEncoder, "probe", probe)
    return probed


def test_a_passed_probe_is_remembered_for_these_very_bytes(with_twin, stamps, tmp_path):
    first = Fingerprinter(load_checkpoint(with_twin), precision="auto")
    assert first.precision.chosen == "int8" and stamps == ["int8"]
    require_reference(first)
    again = Fingerprinter(load_checkpoint(with_twin), precision="auto")
    require_reference(again)
    assert again.precision.chosen == "int8" and "before" in again.precision.reason
    assert stamps == ["int8"]  # neither the probe nor the reference check ran again
    import onnx

    pt = copy_checkpoint(with_twin, tmp_path / with_twin.name)
    twin = onnx.load(int8_path(with_twin.with_suffix(".onnx")))
    twin.doc_string = "other bytes, the same network: probed again"
    onnx.save(twin, int8_path(pt.with_suffix(".onnx")))
    assert Fingerprinter(load_checkpoint(pt), precision="auto").precision.chosen == "int8"
    assert stamps == ["int8", "int8"]


def test_a_failed_probe_is_not_remembered(with_twin, stamps, monkeypatch):
    monkeypatch.setattr("engine.model.onnx_backend.MIN_COSINE", 1.01)
    for _ in range(2):
        assert Fingerprinter(load_checkpoint(with_twin), precision="auto").precision.chosen == (
            "float32"
        )
    assert stamps == ["int8", "int8"]


def test_the_override_forces_either_path(with_twin, monkeypatch):
    checkpoint = load_checkpoint(with_twin)
    assert Fingerprinter(checkpoint, precision="int8").precision.chosen == "int8"
    monkeypatch.setattr("engine.model.onnx_backend.load_int8", lambda *a: pytest.fail("loaded"))
    assert Fingerprinter(checkpoint, precision="float32").precision.chosen == "float32"


def test_without_a_twin_onnx_runs_float32_whatever_is_asked():
    checkpoint = load_checkpoint(default_checkpoint_path())
    for asked in ("auto", "int8", "bfloat16"):
        precision = Fingerprinter(checkpoint, precision=asked).precision
        assert precision.chosen == "float32" and precision.reason, asked


def test_nan_at_run_time_is_recomputed_in_float32_and_switches_int8_off(with_twin, audio):
    fingerprinter = Fingerprinter(load_checkpoint(with_twin), precision="int8")

    class NaNSession:
        def run(self, outputs, inputs):
            return [np.full((len(inputs["mel"]), 128), np.nan, np.float32)]

    fingerprinter.encoder.int8 = Int8Twin(NaNSession(), "0" * 64)
    fp = fingerprinter.audio(audio)
    exact = Fingerprinter(load_checkpoint(with_twin), precision="float32").audio(audio)
    assert min_cosine(fp, exact) > 0.9999
    assert fingerprinter.precision.chosen == "float32"
    assert "non-finite" in fingerprinter.precision.reason


def test_a_twin_made_from_other_weights_is_not_used(with_twin, tmp_path, caplog):
    import onnx

    pt = tmp_path / with_twin.name
    copy_checkpoint(with_twin, pt)
    twin = onnx.load(int8_path(with_twin.with_suffix(".onnx")))
    for prop in twin.metadata_props:
        if prop.key == "nfp.weights_sha256":
            prop.value = "0" * 64
    onnx.save(twin, int8_path(pt.with_suffix(".onnx")))
    with caplog.at_level(logging.WARNING):
        assert load_int8(load_checkpoint(pt)) is None
    assert "made from other weights" in caplog.text


def test_nfp_export_int8_writes_the_twin_the_engine_runs(tmp_path, music_dir, capsys):
    pt = make_tiny_checkpoint(tmp_path / "tiny.pt", seed=3)
    assert main(["export", str(pt), "--int8", str(music_dir)]) == 0
    twin = int8_path(pt.with_suffix(".onnx"))
    assert f"int8 twin {twin}" in capsys.readouterr().out
    assert Fingerprinter(load_checkpoint(pt), precision="int8").precision.chosen == "int8"
