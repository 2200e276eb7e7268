"""Helpers shared by the tests that run `nfp` on libraries: tests/test_reliability.py and
tests/test_cluster.py."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from engine.cli import main
from engine.library.library import Library


def nfp(*args: object) -> int:
    return main([str(a) for a in args])


def tracks_of(db: Path) -> list[str]:
    with Library(db, writable=False) as library:
        return sorted(t.path for t in library.tracks())


def one_line_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err.strip().rsplit("\r", 1)[-1]  # after any progress bar
    assert len(err.splitlines()) == 1 and err.startswith("nfp: error:"), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def tamper_meta(key: str, value: str) -> Callable[[Path], None]:
    """A function that sets one record of a library's track database, as an attacker would."""

    def tamper(db: Path) -> None:
        con = sqlite3.connect(db / "tracks.sqlite")
        with con:
            con.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
        con.close()

    return tamper


def rows_file(db: Path) -> Path:
    return next(db.glob("vectors-*.f32"))


def run_frozen(tmp_path: Path, args: list[str], moment: str, after: int) -> None:
    """Run `nfp ARGS` until it reaches `moment` for the `after`-th time, then kill -9 it."""
    hook = tmp_path / "hook"
    hook.mkdir(exist_ok=True)
    shutil.copy(Path(__file__).with_name("freeze_hook.py"), hook / "sitecustomize.py")
    flag = tmp_path / "frozen"
    flag.unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{Path(__file__).parents[2]}",
           "NFP_TEST_FREEZE_AT": moment, "NFP_TEST_FREEZE_AFTER": str(after),
           "NFP_TEST_FREEZE_FLAG": str(flag)}  # fmt: skip
    cmd = [sys.executable, "-m", "engine.cli", *args]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(1200):  # a generous bound (120 s) for a slow machine; never a budget
            if flag.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert flag.exists(), (
            f"never reached {moment!r}: {proc.stderr.read() if proc.poll() else ''}"
        )
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
