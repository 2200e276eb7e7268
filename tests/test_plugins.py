"""`nfp` subcommands from entry-point plugins load only when they run (engine.plugins), so no
other command imports their packages: `training`, and with it torch."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import types
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from engine import plugins
from engine.cli import command_name, main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def fake_plugins(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Two plugins: `hello` (a module that records its loading) and `broken` (a module that
    fails to import); returns the names of the plugins loaded so far."""
    loaded: list[str] = []

    def register(sub) -> None:
        loaded.append("hello")
        parser = sub.add_parser("hello", help="say hello")
        parser.add_argument("--name", default="world")
        parser.set_defaults(func=lambda args: print(f"hello {args.name}") or 0)

    monkeypatch.setitem(sys.modules, "fake_hello", types.SimpleNamespace(register=register))
    eps = [
        EntryPoint("hello", "fake_hello:register", plugins.GROUP),
        EntryPoint("broken", "fake_missing_package.cli:register", plugins.GROUP),
    ]
    monkeypatch.setattr(
        plugins, "entry_points", lambda group: eps if group == plugins.GROUP else []
    )
    return loaded


def test_a_builtin_command_loads_no_plugin(fake_plugins, tmp_path, capsys):
    assert main(["info", "--db", str(tmp_path / "none"), "--json"]) == 1
    assert fake_plugins == []


def test_the_help_lists_plugins_without_loading_them(fake_plugins, capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "hello" in out and "broken" in out and "see nfp hello -h" in out
    assert fake_plugins == []


def test_a_plugin_loads_when_its_command_runs(fake_plugins, capsys):
    assert main(["-v", "hello", "--name", "you"]) == 0
    assert capsys.readouterr().out == "hello you\n"
    assert fake_plugins == ["hello"]


def test_a_plugin_that_cannot_load_is_one_line_naming_it(fake_plugins, capsys):
    assert main(["broken", "run", "--anything"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nfp: error: the 'broken' command is unavailable here")
    assert "fake_missing_package" in err and len(err.splitlines()) == 1


def test_the_command_name_is_the_first_word_that_is_not_an_option():
    assert command_name(["-v", "train", "run", "--fresh"]) == "train"
    assert command_name(["--help"]) is None


def _imported(args: list[str], tmp_path: Path) -> set[str]:
    """The modules a whole `nfp ARGS` process imports (python -X importtime's report)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "engine.cli", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert lines, done.stderr
    return {line.rpartition("|")[2].strip() for line in lines}


@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="torch is not installed")
def test_no_command_but_train_eval_and_export_imports_torch(real_db, music_dir, tmp_path):
    query = music_dir / "three.ogg"
    for args in (["identify", str(query), "--db", str(real_db)],
                 ["info", "--db", str(real_db)], ["--help"], ["identify", "--help"]):  # fmt: skip
        assert "torch" not in _imported(args, tmp_path), args
    if importlib.util.find_spec("training") is not None:  # the check sees torch where it is
        assert "torch" in _imported(["eval", "--help"], tmp_path)
