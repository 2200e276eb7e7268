"""The encoder's numeric path: whatever this machine chose must agree with float32
(docs/architecture.md, Numeric paths)."""

import threading

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.core.audio import SAMPLE_RATE, count_segments
from engine.core.errors import NfpError
from engine.library.index import VectorIndex
from engine.model.checkpoint import default_checkpoint_path
from engine.model.fingerprint import (
    ONE_CORE_CALL_SEGMENTS,
    QUIET_DB,
    Fingerprinter,
    blank_silence,
    call_slices,
    check_reference,
    spread_slices,
)
from engine.model.load import load_checkpoint
from engine.model.precision import PRECISION_ENV, requested_precision
from engine.model.probe import MIN_COSINE, min_cosine
from engine.model.torch_backend import TorchEncoder
from engine.selftest import run_self_test
from tests.support.audio_files import music_like
from tests.support.tiny import make_tiny_checkpoint


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return music_like(30.0, SAMPLE_RATE, 3)


@pytest.fixture(scope="module")
def shipped():
    """The shipped default as users run it (on ONNX Runtime where it is installed)."""
    return load_checkpoint(default_checkpoint_path())


@pytest.fixture(scope="module")
def shipped_torch():
    """The shipped default on torch, whose bfloat16 path the probe guards."""
    return load_checkpoint(default_checkpoint_path(), backend="torch")


def test_fingerprints_are_unit_vectors_one_per_hop_and_batch_independent(audio, shipped):
    fingerprinter = Fingerprinter(shipped)
    fp = fingerprinter.audio(audio)
    assert fp.shape == (count_segments(len(audio)), 128) and fp.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(fp, axis=1), 1.0, atol=1e-5)
    small_batches = Fingerprinter(shipped, batch_segments=3)
    assert min_cosine(small_batches.audio(audio), fp) > 0.9999


@pytest.mark.parametrize(("n", "slices"), [(1, [(0, 1)]), (8, [(0, 8)]), (9, [(0, 9)]),
                                           (18, [(0, 8), (8, 16), (16, 18)]),
                                           (17, [(0, 8), (8, 17)])])  # fmt: skip
def test_call_slices_cover_the_rows_and_never_leave_one_alone(n, slices):
    assert [(s.start, s.stop) for s in call_slices(n, 8)] == slices


@pytest.mark.parametrize(("n", "cores", "sizes"), [(18, 2, [5, 5, 5, 3]), (9, 2, [5, 4]),
                                                    (3, 2, [3]), (64, 1, [8] * 8), (0, 2, []),
                                                    (129, 1, [8] * 15 + [9])])  # fmt: skip
def test_spread_slices_share_rows_out_by_core_and_never_leave_one_alone(n, cores, sizes):
    slices = spread_slices(n, cores, 8)
    assert [s.stop - s.start for s in slices] == sizes
    assert [s.start for s in slices] == [sum(sizes[:i]) for i in range(len(sizes))]


def test_calls_on_one_core_give_the_fingerprints_of_whole_batches_bit_for_bit(shipped, monkeypatch):
    """What indexing runs (one core, calls of ONE_CORE_CALL_SEGMENTS) and what a query runs
    (those calls side by side on two cores) give the very fingerprints of one call per batch,
    on this machine: 129 and 73 segments leave a single segment after whole calls."""
    one_core = Fingerprinter(shipped, threads=1)
    assert one_core.call_segments == ONE_CORE_CALL_SEGMENTS < one_core.batch_segments
    whole = Fingerprinter(shipped, threads=1)
    whole.call_segments = whole.batch_segments
    side_by_side = Fingerprinter(shipped, threads=2)
    threads = set()
    encode = side_by_side.encode
    monkeypatch.setattr(side_by_side, "encode",
                        lambda mel: threads.add(threading.get_ident()) or encode(mel))  # fmt: skip
    for seconds in (65.0, 37.0):
        audio = music_like(seconds, SAMPLE_RATE, 4)
        np.testing.assert_array_equal(one_core.audio(audio), whole.audio(audio))
        np.testing.assert_array_equal(side_by_side.audio(audio), whole.audio(audio))
    assert len(threads) == 2


@pytest.mark.parametrize("backend", ["onnx", "torch"])
def test_the_path_chosen_on_this_machine_agrees_with_float32(audio, backend):
    """Runs on any CPU: whatever `auto` chose here, on either backend, gives torch float32's
    fingerprints and the same nearest neighbours."""
    chosen = Fingerprinter(load_checkpoint(default_checkpoint_path(), backend), precision="auto")
    exact = Fingerprinter(load_checkpoint(default_checkpoint_path(), "torch"), precision="float32")
    assert chosen.precision.chosen in ("float32", "bfloat16", "int8") and chosen.precision.reason
    fast, reference = chosen.audio(audio), exact.audio(audio)
    assert min_cosine(fast, reference) >= MIN_COSINE
    index = VectorIndex.build(reference, "Flat")
    _, nearest_exact = index.search(reference, 1)
    _, nearest_chosen = index.search(fast, 1)
    np.testing.assert_array_equal(nearest_chosen, nearest_exact)


def test_a_fast_path_that_returns_nan_is_refused_by_the_probe(shipped_torch, monkeypatch):
    monkeypatch.setattr("engine.model.torch_backend.native_bfloat16", lambda: True)
    monkeypatch.setattr(TorchEncoder, "encode_bfloat16", lambda self, mel: _nan_rows(mel, 128))
    monkeypatch.setattr("engine.model.torch_backend._DECISIONS", {})
    fingerprinter = Fingerprinter(shipped_torch, precision="auto")
    assert fingerprinter.precision.chosen == "float32"
    assert "failed the probe (non-finite" in fingerprinter.precision.reason


def test_nan_at_run_time_is_recomputed_in_float32_and_switches_the_fast_path_off(
    audio, shipped_torch, monkeypatch
):
    """The AMX NaN came and went between runs: a probe that passed proves nothing later."""
    monkeypatch.setattr(TorchEncoder, "encode_bfloat16", lambda self, mel: _nan_rows(mel, 128))
    fingerprinter = Fingerprinter(shipped_torch, precision="bfloat16")
    fp = fingerprinter.audio(audio)
    assert np.isfinite(fp).all()
    exact = Fingerprinter(shipped_torch, precision="float32").audio(audio)
    assert min_cosine(fp, exact) > 0.9999
    assert fingerprinter.precision.chosen == "float32"
    assert "non-finite" in fingerprinter.precision.reason


def test_the_precision_override_is_read_and_checked(monkeypatch):
    monkeypatch.setenv(PRECISION_ENV, "Float32")
    assert requested_precision() == "float32"
    assert requested_precision("bfloat16") == "bfloat16"
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(NfpError, match="NFP_PRECISION='fp8'"):
        requested_precision()


def _nan_rows(mel, d: int):
    fp = torch.nn.functional.normalize(torch.ones(len(mel), d), dim=1)
    fp[::2] = float("nan")
    return fp


def test_shipped_checkpoints_carry_references_this_machine_reproduces(shipped):
    assert shipped.reference is not None and shipped.reference.shape == (15, 128)
    report = check_reference(Fingerprinter(shipped))
    assert report["ok"] and report["cosine"] >= MIN_COSINE


def test_fingerprints_that_differ_from_the_reference_fail_info_and_the_self_test(
    tmp_path, music_dir, monkeypatch, capsys
):
    """A machine computing wrong numbers must say so instead of passing: `nfp index` writes
    nothing, `nfp info` and the self-test fail."""
    path = make_tiny_checkpoint(tmp_path / "ckpt" / "nfp-scnn-d128.pt")
    db = tmp_path / "db"
    assert main(["index", str(music_dir), "--db", str(db), "--checkpoint", str(path)]) == 0
    payload = torch.load(path, weights_only=True)
    payload["reference"] = torch.nn.functional.normalize(torch.randn(15, 64), dim=1)
    torch.save(payload, path)  # the same weights, so the library still belongs to it
    assert not check_reference(Fingerprinter(load_checkpoint(path)))["ok"]
    fresh = tmp_path / "fresh"
    assert main(["index", str(music_dir), "--db", str(fresh), "--checkpoint", str(path)]) == 1
    assert "differ from the checkpoint's reference" in capsys.readouterr().err
    assert not list(fresh.glob("vectors-*"))
    assert main(["info", "--db", str(db)]) == 1
    assert "differ from the checkpoint's reference" in capsys.readouterr().err
    monkeypatch.setenv("NFP_CHECKPOINT_DIR", str(path.parent))
    with pytest.raises(NfpError, match="self-test: .*differ from the checkpoint's reference"):
        run_self_test()


def test_a_tracks_silence_is_stored_as_zero_rows(audio, shipped):
    """A fade 40 dB under the track (above -60 dBFS, so only QUIET_DB makes it silence) stores
    zero rows; the music around it, and a track that is quiet throughout, keep theirs."""
    fade = audio[: 5 * SAMPLE_RATE] * 10 ** (-(QUIET_DB + 5) / 20)
    assert np.sqrt(np.mean(fade**2)) > 1e-3
    track = np.concatenate([audio, fade, audio])  # 30 s, 5 s, 30 s; segments every 0.5 s
    norms = np.linalg.norm(blank_silence(Fingerprinter(shipped).audio(track), track), axis=1)
    np.testing.assert_array_equal(norms[60:69], 0.0)  # wholly inside the fade
    np.testing.assert_allclose(np.r_[norms[:59], norms[70:]], 1.0, atol=1e-3)
    soft = audio * 0.02  # about -51 dBFS throughout: no louder part to be quiet beside
    fp = Fingerprinter(shipped).audio(soft)
    np.testing.assert_allclose(np.linalg.norm(blank_silence(fp, soft), axis=1), 1.0, atol=1e-3)
