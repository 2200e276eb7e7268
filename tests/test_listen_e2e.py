"""`nfp listen` end to end: real music played into the PulseAudio virtual microphone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.virtual_mic import Player
from engine.core.audio import load_audio

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
TRACKS = ["battle.ogg", "elvish-theme.ogg", "frantic.ogg", "knalgan_theme.ogg"]
PLAYING = "elvish-theme.ogg"
START_S = 47.0
LISTEN_S = 15.0


def test_listen_names_the_track_playing_into_the_microphone(virtual_mic, tmp_path):
    music = tmp_path / "music"
    music.mkdir()
    for name in TRACKS:
        (music / name).symlink_to(WESNOTH_MUSIC / name)
    env = {k: v for k, v in os.environ.items() if k != "NFP_CHECKPOINT_DIR"}
    env["PULSE_SERVER"] = virtual_mic
    db = str(tmp_path / "db")
    cli = [sys.executable, "-m", "engine.cli"]
    subprocess.run([*cli, "index", str(music), "--db", db], env=env, check=True, timeout=300,
                   capture_output=True)  # fmt: skip
    listen = subprocess.Popen(
        [*cli, "listen", "--db", db, "--device", "pulse", "--seconds", str(LISTEN_S)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    player = Player(load_audio(WESNOTH_MUSIC / PLAYING), START_S, 30.0, tmp_path, virtual_mic)
    try:
        out, err = listen.communicate(timeout=60)
    finally:
        player.stop()
    assert listen.returncode == 0, err
    matched = [line for line in out.splitlines() if "Elvish theme" in line]
    assert matched, out + err
    minutes, seconds = matched[0].split(" at ")[1].split(" ")[0].split(":")
    position = int(minutes) * 60 + int(seconds)
    assert START_S <= position <= START_S + LISTEN_S, matched[0]
