"""PulseAudio sources by their description, monitors included, through the virtual microphone's
private server: a second null sink, "Speakers", plays music, and choosing "Monitor of Speakers"
records it, although the server's default source is another sink's monitor (docs/architecture.md,
The app, live input and the bundle)."""

from __future__ import annotations

import os
import subprocess
import time

import numpy as np
import pytest

from engine.core.audio import SAMPLE_RATE
from engine.core.mic import input_devices, record_blocks, resolve_device
from tests.support.audio_files import music_like, write_audio

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def speakers(virtual_mic, tmp_path_factory):
    """A null sink described as "Speakers" on the virtual microphone's server."""
    done = subprocess.run(
        ["pactl", "load-module", "module-null-sink", "sink_name=speakers",
         "sink_properties=device.description=Speakers"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    yield "Monitor of Speakers"
    subprocess.run(["pactl", "unload-module", done.stdout.strip()], capture_output=True)


def test_sources_are_listed_by_description_monitors_included(speakers):
    devices = {d.name: d for d in input_devices()}
    assert speakers in devices and devices[speakers].pulse_source == "speakers.monitor"
    assert resolve_device("monitor of speak").pulse_source == "speakers.monitor"
    assert not devices[speakers].is_default  # PortAudio's default stays the one default


def test_a_monitor_chosen_by_description_records_what_its_sink_plays(speakers, tmp_path):
    wav = write_audio(tmp_path / "music.wav", music_like(8.0, SAMPLE_RATE, 2), SAMPLE_RATE)
    player = subprocess.Popen(["paplay", "--device=speakers", str(wav)], env=os.environ)
    try:
        time.sleep(0.3)
        levels, started = [], time.monotonic()
        for block, _rate in record_blocks(resolve_device(speakers)):
            levels.append(float(np.sqrt(np.mean(block**2))))
            if time.monotonic() - started > 3.0:
                break
    finally:
        player.terminate()
    assert max(levels) > 0.01, f"the monitor of Speakers was silent (levels up to {max(levels)})"
    assert "PULSE_SOURCE" not in os.environ  # set only while the stream connected
