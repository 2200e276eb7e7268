"""The app on a real X server (Xvfb with the openbox window manager) through Qt's xcb plugin,
not the offscreen one: a missing xcb library or a window that never maps fails here."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = pytest.mark.gui

REPO = Path(__file__).resolve().parents[1]
TITLE = "^nfp — identify music"


@pytest.fixture(scope="module")
def x_display(tmp_path_factory) -> Iterator[dict[str, str]]:
    """An environment whose DISPLAY is a fresh Xvfb with openbox, and fresh settings."""
    for tool in ("Xvfb", "openbox", "xdotool"):
        if not shutil.which(tool):
            pytest.fail(f"needs {tool} (scripts/setup.sh installs xvfb, openbox, xdotool)")
    read, write = os.pipe()
    command = ["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"]
    xvfb = subprocess.Popen(command, pass_fds=[write], stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        display = f":{f.readline().strip()}"
    home = tmp_path_factory.mktemp("home")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QT_", "WAYLAND"))}
    env |= {"DISPLAY": display, "HOME": str(home), "XDG_CONFIG_HOME": str(home / "config"),
            "XDG_DATA_HOME": str(home / "share")}  # fmt: skip
    wm = subprocess.Popen(["openbox"], env=env, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield env
    finally:
        wm.terminate()
        xvfb.terminate()


def test_the_self_test_opens_its_window_on_the_real_xcb_platform(x_display):
    done = subprocess.run([sys.executable, "-m", "nfp_desktop.app", "--self-test"], cwd=REPO,
                          env=x_display, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "window opened on Qt platform xcb" in done.stdout


def test_the_app_maps_its_window_and_quits_when_the_window_manager_closes_it(x_display):
    app = subprocess.Popen([sys.executable, "-m", "nfp_desktop.app"], cwd=REPO, env=x_display,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        search = ["xdotool", "search", "--sync", "--onlyvisible", "--name", TITLE]
        found = subprocess.run(search, env=x_display, capture_output=True, text=True, timeout=30)
        window = found.stdout.split()[0]
        geometry = subprocess.run(["xdotool", "getwindowgeometry", window], env=x_display,
                                  capture_output=True, text=True).stdout  # fmt: skip
        assert "Geometry:" in geometry
        subprocess.run(["xdotool", "windowactivate", "--sync", window, "key", "alt+F4"],
                       env=x_display, timeout=30)  # fmt: skip
        assert app.wait(timeout=10) == 0, app.stderr.read()
    finally:
        if app.poll() is None:
            app.kill()


@pytest.mark.e2e
@pytest.mark.slow
def test_listening_to_a_monitor_chosen_by_description_shows_the_track_on_xcb(
    x_display, virtual_mic, tmp_path
):
    """The app on xcb, Settings → "Monitor of Speakers", a track played into that sink: the
    window shows its title and a position within 1 s (tests/support/xcb_listen_check.py)."""
    loaded = subprocess.run(
        ["pactl", "load-module", "module-null-sink", "sink_name=speakers",
         "sink_properties=device.description=Speakers"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    try:
        done = subprocess.run(
            [sys.executable, "-m", "tests.support.xcb_listen_check", str(tmp_path)],
            cwd=REPO, env={**x_display, "PULSE_SERVER": virtual_mic},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
    finally:
        subprocess.run(["pactl", "unload-module", loaded.stdout.strip()], capture_output=True)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "platform xcb" in done.stdout
