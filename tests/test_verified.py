"""An export verified against its .pt is not verified again on every load (issue 24): a stamp
names both files' contents, so a change to either is verified anew, and a damaged or unwritable
stamp cache costs only the time to verify again. Likewise the reference check runs once per
export, runtime, code and CPU, and a stamp from another CPU is never trusted."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import engine.model.fingerprint
import engine.model.load
import engine.model.onnx_backend
from engine.cli import main
from engine.core.errors import NfpError
from engine.core.stamps import stamp_dir
from engine.model import verified
from engine.model.fingerprint import Fingerprinter, require_reference
from engine.model.load import export_cache_dir, load_checkpoint
from engine.model.onnx_backend import NUMERIC_PATH
from tests.support.tiny import copy_checkpoint, make_tiny_checkpoint


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
    return copy_checkpoint(pt, folder / pt.name)


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


# The reference check (engine.model.fingerprint.require_reference): this machine's fingerprints
# of the probe against the checkpoint's, run once per export, runtime, code and CPU.

X86 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
cpu MHz\t\t: {mhz}
flags\t\t: fpu sse2 avx2 {extra}

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC
cpu MHz\t\t: 2000.000
flags\t\t: fpu sse2 avx2 {extra}
"""


@pytest.fixture
def reference_checks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[str]:
    """The reference checks run from here (their checkpoints' file names), with a stamp cache
    of this test's own and a CPU that /proc/cpuinfo describes as this test says."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    calls: list[str] = []
    check = engine.model.fingerprint.check_reference

    def counted(fingerprinter: Fingerprinter) -> dict:
        calls.append(fingerprinter.checkpoint.onnx_path.name)
        return check(fingerprinter)

    monkeypatch.setattr(engine.model.fingerprint, "check_reference", counted)
    _describe_cpu(monkeypatch, tmp_path, X86.format(mhz="2000.000", extra="avx512f"))
    return calls


def _describe_cpu(monkeypatch: pytest.MonkeyPatch, folder: Path, text: str | None) -> None:
    """/proc/cpuinfo as `text` says (None: there is none, as on macOS)."""
    cpuinfo = folder / f"cpuinfo-{len(list(folder.glob('cpuinfo-*')))}"
    if text is not None:
        cpuinfo.write_text(text)
    monkeypatch.setattr(verified, "CPUINFO", cpuinfo)
    verified.cpu_identity.cache_clear()


@pytest.fixture(autouse=True)
def _forget_the_cpu() -> Iterator[None]:
    """The next test reads the real /proc/cpuinfo again."""
    yield
    verified.cpu_identity.cache_clear()


def _require(checkpoint: Path) -> None:
    require_reference(Fingerprinter(load_checkpoint(checkpoint)))


def _reference_stamps() -> list[Path]:
    return [p for p in stamp_dir().glob("*.json") if '"reference"' in p.read_text()]


def test_a_passed_reference_check_runs_once_on_this_machine(
    exported: Path, reference_checks: list[str]
):
    for _ in range(3):
        _require(exported)
    assert reference_checks == [exported.with_suffix(".onnx").name]
    (stamp,) = _reference_stamps()
    record = json.loads(stamp.read_text())
    assert record["export_sha256"] == load_checkpoint(exported).export_sha256
    assert record["precision"] == "float32"


def test_a_reference_stamp_from_another_cpu_is_not_trusted(
    exported: Path, reference_checks: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """A cache folder shared between machines: each CPU runs the check once for itself."""
    _require(exported)
    _describe_cpu(monkeypatch, tmp_path, X86.format(mhz="2000.000", extra="avx512f avx512_bf16"))
    _require(exported)
    _require(exported)
    assert len(reference_checks) == 2 and len(_reference_stamps()) == 2
    _describe_cpu(monkeypatch, tmp_path, X86.format(mhz="3100.250", extra="avx512f"))
    _require(exported)  # the first CPU again, at another clock: its own stamp stands
    assert len(reference_checks) == 2


def test_without_a_cpu_to_name_the_reference_check_runs_every_time(
    exported: Path, reference_checks: list[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    for text in (None, "processor\t: 0\nbogomips\t: 50.00\n"):
        _describe_cpu(monkeypatch, tmp_path, text)
        _require(exported)
        _require(exported)
    assert len(reference_checks) == 4 and not _reference_stamps()


def test_a_damaged_reference_stamp_is_not_trusted_and_is_renewed(
    exported: Path, reference_checks: list[str]
):
    _require(exported)
    (stamp,) = _reference_stamps()
    good = stamp.read_bytes()
    stamp.write_bytes(good.replace(b"float32", b"int8"))
    _require(exported)
    assert len(reference_checks) == 2 and stamp.read_bytes() == good


def test_a_reference_stamp_names_the_code_that_computes_the_fingerprints(
    exported: Path, reference_checks: list[str], monkeypatch: pytest.MonkeyPatch
):
    _require(exported)
    path = (*NUMERIC_PATH, "engine.core.steps")
    monkeypatch.setattr(engine.model.onnx_backend, "NUMERIC_PATH", path)
    _require(exported)
    assert len(reference_checks) == 2
    monkeypatch.setattr(engine.model.onnx_backend, "NUMERIC_PATH", (*path[:-1], "not.imported"))
    _require(exported)
    _require(exported)
    assert len(reference_checks) == 4


def test_an_export_whose_weights_changed_is_checked_again_and_refused(
    exported: Path, reference_checks: list[str], tmp_path: Path
):
    """A stamp names the export's bytes: other weights under the same metadata are refused."""
    _require(exported)
    edited = tmp_path / "edited.onnx"
    model = onnx.load(str(exported.with_suffix(".onnx")))
    biggest = max(model.graph.initializer, key=lambda t: np.prod(t.dims))
    biggest.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(biggest), biggest.name))
    onnx.save(model, str(edited))
    for _ in range(2):
        with pytest.raises(NfpError, match="differ from the checkpoint's reference"):
            _require(edited)
    assert reference_checks[1:] == ["edited.onnx", "edited.onnx"]
    assert len(_reference_stamps()) == 1


def test_cpu_identity_is_the_first_processors_model_and_instruction_sets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    _describe_cpu(monkeypatch, tmp_path, X86.format(mhz="1999.999", extra="avx512f"))
    identity = verified.cpu_identity()
    assert "model name: AMD EPYC" in identity and "flags: fpu sse2 avx2 avx512f" in identity
    assert "MHz" not in identity and identity.count("flags") == 1
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd sve\nCPU part\t: 0xd40\n"
    _describe_cpu(monkeypatch, tmp_path, arm)
    assert verified.cpu_identity().endswith("Features: fp asimd sve\nCPU part: 0xd40")
