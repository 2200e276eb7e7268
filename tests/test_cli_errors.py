"""Never a traceback: every failure of `nfp` is one line naming the file and the cause."""

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import cli
from engine.cli import main
from engine.core.errors import CheckpointError
from tests.support.tiny import make_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return make_tiny_checkpoint(tmp_path / "tiny.pt")


@pytest.fixture
def empty_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "music"
    folder.mkdir()
    return folder


def assert_one_line_error(err: str, *, naming: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("nfp: error:") and naming in lines[0]
    assert "Traceback" not in err


def test_info_of_a_db_that_is_a_file(tmp_path: Path, capsys):
    db = tmp_path / "a-file"
    db.write_text("not a library")
    assert main(["info", "--db", str(db)]) == 1
    assert_one_line_error(capsys.readouterr().err, naming=str(db))


@pytest.mark.parametrize("db", ["a-file/sub", "a-file"])
def test_index_into_a_db_under_a_file(tmp_path: Path, tiny, empty_folder, capsys, db: str):
    (tmp_path / "a-file").write_text("not a folder")
    db_path = tmp_path / db
    args = ["index", str(empty_folder), "--db", str(db_path), "--checkpoint", str(tiny)]
    assert main(args) == 1
    assert_one_line_error(capsys.readouterr().err, naming=str(db_path))


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_index_into_a_db_nobody_may_create(tiny, empty_folder, capsys):
    args = ["index", str(empty_folder), "--db", "/proc/nfp-test", "--checkpoint", str(tiny)]
    assert main(args) == 1
    assert_one_line_error(capsys.readouterr().err, naming="/proc/nfp-test")


@pytest.mark.parametrize(
    ("raised", "line"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/srv"), "/srv: Permission denied"),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (CheckpointError("/m/c.pt", "gone"), "/m/c.pt: not a usable nfp checkpoint (gone)"),
    ],
)
def test_errors_escaping_a_command_are_one_line(monkeypatch, capsys, raised, line: str):
    def fail(args):
        raise raised

    monkeypatch.setattr(cli, "cmd_info", fail)
    assert main(["info"]) == 1
    assert capsys.readouterr().err == f"nfp: error: {line}\n"


def test_ctrl_c_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_info", interrupted)
    assert main(["info"]) == 130
    assert capsys.readouterr().err == "nfp: interrupted\n"


class ClosedPipe:
    """A stdout whose reader has gone away, as `| head -1` leaves it; it has no file descriptor."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "Broken pipe")


@pytest.mark.parametrize("lines", [1, 50])
def test_a_closed_stdout_ends_quietly_with_status_1(monkeypatch, capsys, lines: int):
    def prints(args):
        for i in range(lines):
            print(f"line {i}")
        return 0

    monkeypatch.setattr(cli, "cmd_info", prints)
    with monkeypatch.context() as m:  # undone before capsys puts its own stdout back
        m.setattr(sys, "stdout", ClosedPipe())
        assert main(["info"]) == 1
    assert capsys.readouterr().err == ""


def test_a_pipe_closed_by_its_reader_gives_no_traceback(tmp_path: Path, tiny, empty_folder):
    """The real thing: `nfp index` prints its summary into a pipe nobody reads any more."""
    args = ["index", str(empty_folder), "--db", str(tmp_path / "db"), "--checkpoint", str(tiny)]
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before nfp writes: EPIPE, deterministically
    try:
        done = subprocess.run(
            [sys.executable, "-m", "engine.cli", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr
    assert "Exception ignored" not in done.stderr
