"""End to end through a virtual microphone: real music played into a PulseAudio null sink whose
monitor is the app's input (docs/architecture.md, The app, live input and the bundle).

Uses the shipped default checkpoint; NFP_E2E_CHECKPOINT=FILE runs it with another one (a
training run's latest checkpoint, say)."""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PySide6.QtCore import Qt
from pytestqt.exceptions import TimeoutError

from bench.virtual_mic import Player
from engine.core.audio import SAMPLE_RATE, load_audio
from engine.model.checkpoint import default_checkpoint_path
from nfp_desktop.main_window import MainWindow
from tests.support.audio_files import music_like
from tests.support.desktop_helpers import index_library, make_context

pytestmark = [pytest.mark.e2e, pytest.mark.gui, pytest.mark.slow]

WESNOTH_MUSIC = Path("/usr/share/games/wesnoth/1.16/data/core/music")
LIBRARY_TRACKS = ["battle.ogg", "breaking_the_chains.ogg", "elvish-theme.ogg", "frantic.ogg"]
STRANGER_TRACK = "the_deep_path.ogg"  # real music not indexed, by a composer none of them shares
PLAY_S = 40.0  # length of the excerpt played into the virtual microphone
# Only a guard against a hang, never a speed budget (bench/bench_live.py measures time to answer):
# on a loaded CI machine a correct answer may take long, and that is not this test's failure.
HANG_GUARD_S = 60.0
LISTEN_SEED = 2611  # which track and where in it: the same case on every run
POSITION_TOLERANCE_S = 1.0


@pytest.fixture(scope="module")
def checkpoint() -> Iterator[Path]:
    """The shipped default (not a test's NFP_CHECKPOINT_DIR), or NFP_E2E_CHECKPOINT."""
    env_dir = os.environ.pop("NFP_CHECKPOINT_DIR", None)
    try:
        yield Path(os.environ.get("NFP_E2E_CHECKPOINT") or default_checkpoint_path())
    finally:
        if env_dir is not None:
            os.environ["NFP_CHECKPOINT_DIR"] = env_dir


@pytest.fixture(scope="module")
def music(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("music")
    for name in LIBRARY_TRACKS:
        if not (WESNOTH_MUSIC / name).is_file():
            pytest.fail(f"{WESNOTH_MUSIC / name}: needs the Debian package wesnoth-1.16-music")
        (folder / name).symlink_to(WESNOTH_MUSIC / name)
    return folder


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, music, checkpoint) -> Path:
    """A data directory whose library holds the music (indexed once for the module)."""
    data = tmp_path_factory.mktemp("data")
    index_library(data / "library", music, checkpoint)
    return data


@pytest.fixture
def window(qtbot, tmp_path, checkpoint, data_dir, virtual_mic) -> MainWindow:
    context = make_context(tmp_path, checkpoint=checkpoint, data_dir=data_dir)
    context.prefs.device = "pulse"
    window = MainWindow(context)
    qtbot.addWidget(window)
    window.show()
    assert window.library_panel.tracks_model.rowCount() == len(LIBRARY_TRACKS)
    yield window
    window.close()


def describe(window: MainWindow) -> str:
    panel = window.listen_panel
    return (
        f"the window shows state {panel.state!r}, {panel.title_label.text()!r} "
        f"({panel.artist_label.text()!r}) at {panel.position_s():.1f} s, "
        f"input level {panel.level_meter.level_db:.0f} dB, banner {window.banner.text()!r}, "
        f"heard {panel.last_live.heard_s if panel.last_live else 0:.1f} s"
    )


def test_listen_shows_the_playing_track_and_follows_it(
    qtbot, window, tmp_path, virtual_mic
) -> None:
    rng = np.random.default_rng(LISTEN_SEED)
    track = WESNOTH_MUSIC / LIBRARY_TRACKS[int(rng.integers(len(LIBRARY_TRACKS)))]
    audio = load_audio(track)
    start_s = float(rng.uniform(5.0, len(audio) / SAMPLE_RATE - PLAY_S - 5.0))
    title = next(
        t.title for t in window.library_panel.tracks_model.rows() if t.path.endswith(track.name)
    )
    panel = window.listen_panel
    player = Player(audio, start_s, PLAY_S, tmp_path, virtual_mic)
    try:
        player.wait_for_sound()
        qtbot.mouseClick(panel.listen_button, Qt.MouseButton.LeftButton)
        pressed = time.monotonic()
        panel.identified.connect(
            lambda _: print(f"\nfirst match {time.monotonic() - pressed:.1f} s after Listen")
        )
        try:
            qtbot.waitUntil(
                lambda: (
                    panel.title_label.text() == title
                    and abs(panel.position_s() - player.position_s()) <= POSITION_TOLERANCE_S
                ),
                timeout=int(HANG_GUARD_S * 1000),
            )
        except TimeoutError:
            waited = time.monotonic() - pressed
            pytest.fail(
                f"{waited:.1f} s after Listen, playing {title!r} at {player.position_s():.1f} s; "
                + describe(window)
            )
        print(
            f"\n{track.name} from {start_s:.1f} s: answered in {time.monotonic() - pressed:.1f} s"
        )
        before, shown_before = player.position_s(), panel.position_s()
        qtbot.wait(3000)
        assert panel.title_label.text() == title
        advanced = panel.position_s() - shown_before
        assert advanced == pytest.approx(player.position_s() - before, abs=0.7)
        assert abs(panel.position_s() - player.position_s()) <= POSITION_TOLERANCE_S
    finally:
        player.stop()
        panel.stop()
        qtbot.waitUntil(lambda: not panel.busy, timeout=10_000)


@pytest.mark.parametrize("stranger", ["wesnoth track not indexed", "generated melody"])
def test_music_not_in_the_library_is_no_match(
    qtbot, window, tmp_path, virtual_mic, stranger
) -> None:
    if stranger == "generated melody":
        audio = music_like(PLAY_S + 1, SAMPLE_RATE, seed=7)
    else:
        audio = load_audio(WESNOTH_MUSIC / STRANGER_TRACK)
    panel = window.listen_panel
    matched = []
    panel.identified.connect(matched.append)
    start_s = 0.0 if stranger == "generated melody" else 30.0
    player = Player(audio, start_s, PLAY_S, tmp_path, virtual_mic)
    try:
        panel.start_listening()
        qtbot.waitUntil(lambda: panel.state == "no_match", timeout=20_000)
        assert panel.title_label.text() == "No match" and not matched
    finally:
        player.stop()
        panel.stop()
        qtbot.waitUntil(lambda: not panel.busy, timeout=10_000)
