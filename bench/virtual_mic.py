"""A virtual microphone for bench_memory.py and the end-to-end tests (docs/architecture.md, The
app, live input and the bundle): a private PulseAudio server with a null sink `vsink` whose monitor
is the default source, and a player that plays into it. It lives here, beside the benchmarks,
because a benchmark run as a script imports only its own folder; the tests import
`bench.virtual_mic` from the repository root."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from engine.core.audio import SAMPLE_RATE

CUSTOM_PA = """\
load-module module-native-protocol-unix auth-anonymous=1 socket={socket}
load-module module-null-sink sink_name=vsink
set-default-source vsink.monitor
"""
ONSET_CHUNK = 80  # samples at 8 kHz (10 ms) read at a time to find when the music starts
ONSET_LEVEL = 30  # of 32767: anything above the null sink's digital silence


@contextlib.contextmanager
def pulseaudio_server(runtime: Path) -> Iterator[str]:
    """Run a PulseAudio daemon with a null sink `vsink` (monitor = default source) from runtime;
    PULSE_SERVER points at it meanwhile. Yields the server address."""
    socket = runtime / "native"
    (runtime / "custom.pa").write_text(CUSTOM_PA.format(socket=socket))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(runtime)}
    daemon = subprocess.Popen(
        ["pulseaudio", "--daemonize=no", "--exit-idle-time=-1", "-n", "-F", "custom.pa"],
        cwd=runtime,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    previous = os.environ.get("PULSE_SERVER")
    try:
        deadline = time.monotonic() + 15
        while not socket.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        if not socket.exists():
            raise RuntimeError(f"pulseaudio did not start in {runtime}")
        server = f"unix:{socket}"
        os.environ["PULSE_SERVER"] = server
        _reinitialise_portaudio()  # PortAudio lists devices once; make it see this server
        yield server
    finally:
        daemon.terminate()
        daemon.wait(10)
        if previous is None:
            os.environ.pop("PULSE_SERVER", None)
        else:
            os.environ["PULSE_SERVER"] = previous


def _reinitialise_portaudio() -> None:
    if "sounddevice" in sys.modules:
        sd = sys.modules["sounddevice"]
        sd._terminate()
        sd._initialize()


class Player:
    """paplay into the null sink; `position_s()` is where the music reaching the microphone is.

    The clock starts when the sound is first heard on the sink's monitor, not when paplay starts:
    the null sink renders only while its monitor is read, and paplay takes a while to start.
    """

    def __init__(
        self,
        audio: np.ndarray,
        start_s: float,
        play_s: float,
        tmp_path: Path,
        server: str,
        sink: str = "vsink",
    ) -> None:
        clip = audio[int(start_s * SAMPLE_RATE) : int((start_s + play_s) * SAMPLE_RATE)]
        wav = tmp_path / "playing.wav"
        with wave.open(str(wav), "wb") as f:  # 16-bit mono at SAMPLE_RATE, as parec reads it
            f.setnchannels(1)
            f.setsampwidth(2)
            f.setframerate(SAMPLE_RATE)
            f.writeframes((np.clip(clip, -1, 1) * 32767).astype("<i2").tobytes())
        self.start_s = start_s
        self.started: float | None = None
        env = {**os.environ, "PULSE_SERVER": server}
        self.monitor = subprocess.Popen(
            [
                "parec",
                f"--device={sink}.monitor",
                "--format=s16le",
                "--rate=8000",
                "--channels=1",
                "--latency-msec=10",
                "--raw",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._watcher = threading.Thread(target=self._watch_onset, daemon=True)
        self._watcher.start()
        time.sleep(0.5)  # the monitor is read, so the sink runs in real time from now on
        cmd = ["paplay", f"--device={sink}", "--latency-msec=50", str(wav)]
        self.process = subprocess.Popen(cmd, env=env)

    def _watch_onset(self) -> None:
        """Read the monitor until stopped (keeping the sink running); note when sound starts."""
        while chunk := self.monitor.stdout.read(2 * ONSET_CHUNK):
            loud = np.abs(np.frombuffer(chunk, np.int16)).max() > ONSET_LEVEL
            if self.started is None and loud:
                self.started = time.monotonic() - ONSET_CHUNK / 8000

    def wait_for_sound(self, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.started is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.started is not None, "the virtual microphone never heard the music"

    def position_s(self) -> float:
        return self.start_s + time.monotonic() - (self.started or time.monotonic())

    def stop(self) -> None:
        for process in (self.process, self.monitor):
            process.terminate()
            process.wait(10)
