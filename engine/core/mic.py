"""Audio input devices through sounddevice (PortAudio): list them, open one, read blocks.

sounddevice is imported inside the functions: it loads the PortAudio library when imported, and
a machine without it should still index and identify files.

PortAudio sees a PulseAudio or PipeWire server only as one ALSA device, "pulse", recording from
the server's default source. So every source the server has (microphones and the "Monitor of …"
sources that carry what the computer itself plays) is listed by its description too, from
`pactl`; choosing one opens "pulse" with PULSE_SOURCE naming it, which libpulse obeys.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from engine.core.errors import NoInputDeviceError

BLOCK_S = 0.1  # 100 ms blocks: a responsive level meter, little callback overhead
READ_TIMEOUT_S = 2.0  # no block for this long means the device stopped (unplugged, suspended)
FIRST_BLOCK_TIMEOUT_S = 10.0  # PulseAudio's ALSA plugin can take seconds to deliver the first


PULSE_DEVICE = "pulse"  # PortAudio's name for the ALSA device that records from PulseAudio
PACTL_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class InputDevice:
    index: int  # PortAudio's
    name: str  # PortAudio's name, or a PulseAudio source's description
    channels: int
    default_rate: float
    is_default: bool
    pulse_source: str | None = None  # the PulseAudio source recorded through PortAudio's "pulse"


def _sounddevice():
    try:
        import sounddevice
    except (OSError, ImportError) as e:  # OSError: sounddevice finds no PortAudio library
        raise NoInputDeviceError(f"PortAudio is not available: {e}") from e
    return sounddevice


def input_devices() -> list[InputDevice]:
    """All devices with input channels (microphones, line-in, PulseAudio monitors via 'pulse')."""
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except sd.PortAudioError as e:
        raise NoInputDeviceError(f"cannot query audio devices: {e}") from e
    found = [
        InputDevice(i, d["name"], d["max_input_channels"], d["default_samplerate"], i == default_in)
        for i, d in enumerate(devices)
        if d["max_input_channels"] > 0
    ]
    pulse = next((d for d in found if d.name == PULSE_DEVICE), None)
    return found + (pulse_source_devices(pulse) if pulse else [])


def pulse_source_devices(pulse: InputDevice) -> list[InputDevice]:
    """Each PulseAudio/PipeWire source as a device recorded through PortAudio's `pulse`,
    named by its description; none where `pactl` is missing or the server does not answer."""
    return [
        InputDevice(
            pulse.index,
            source["description"],
            min(source["channels"], pulse.channels),
            pulse.default_rate,
            False,
            source["name"],
        )
        for source in pulse_sources()
    ]


def pulse_sources() -> list[dict]:
    """[{"name", "description", "channels"}] of the sound server's sources, from `pactl`."""
    if not shutil.which("pactl"):
        return []
    try:
        done = subprocess.run(["pactl", "--format=json", "list", "sources"], capture_output=True,
                              text=True, timeout=PACTL_TIMEOUT_S)  # fmt: skip
        listed = json.loads(done.stdout) if done.returncode == 0 else []
    except (OSError, subprocess.TimeoutExpired, ValueError):
        return []
    return [
        {
            "name": s["name"],
            "description": s.get("description") or s["name"],
            "channels": int(s.get("channel_map", "mono").count(",") + 1),
        }
        for s in listed
        if isinstance(s, dict) and isinstance(s.get("name"), str)
    ]


def resolve_device(name: str | None) -> InputDevice:
    """The device called `name` (exact, then substring), or the default input for None."""
    devices = input_devices()
    if not devices:
        raise NoInputDeviceError("this computer has no audio input device")
    if name is None:
        return next((d for d in devices if d.is_default), devices[0])
    for match in (lambda d: d.name == name, lambda d: name.lower() in d.name.lower()):
        found = [d for d in devices if match(d)]
        if found:
            return found[0]
    names = ", ".join(d.name for d in devices)
    raise NoInputDeviceError(f"no input device named {name!r}; available: {names}")


def record_blocks(device: InputDevice) -> Iterator[tuple[np.ndarray, int]]:
    """Blocks (float32 (n, channels), rate) from the device until the caller stops iterating.

    Raises NoInputDeviceError when the device cannot be opened or stops delivering audio.
    """
    sd = _sounddevice()
    rate = int(device.default_rate)
    blocks: queue.Queue[np.ndarray] = queue.Queue(maxsize=100)

    def callback(indata: np.ndarray, frames: int, time: object, status: object) -> None:
        # When the consumer is behind, dropping a block beats blocking PortAudio's thread.
        with contextlib.suppress(queue.Full):
            blocks.put_nowait(indata.copy())

    with _pulse_source(device.pulse_source):
        stream = _open_stream(sd, device, callback)
    try:
        try:
            stream.start()  # PortAudio often refuses a busy or vanished device only here
        except sd.PortAudioError as e:
            raise NoInputDeviceError(f"cannot start {device.name!r}: {e}") from e
        timeout = FIRST_BLOCK_TIMEOUT_S
        while True:
            try:
                yield blocks.get(timeout=timeout), rate
            except queue.Empty as e:
                raise NoInputDeviceError(f"{device.name!r} stopped delivering audio") from e
            timeout = READ_TIMEOUT_S
    finally:
        # Closing a device that vanished fails too; that error would hide the one that matters.
        with contextlib.suppress(sd.PortAudioError):
            stream.close()


@contextlib.contextmanager
def _pulse_source(source: str | None) -> Iterator[None]:
    """PULSE_SOURCE set to `source` while the stream connects (libpulse reads it then)."""
    if source is None:
        yield
        return
    previous = os.environ.get("PULSE_SOURCE")
    os.environ["PULSE_SOURCE"] = source
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("PULSE_SOURCE", None)
        else:
            os.environ["PULSE_SOURCE"] = previous


def _open_stream(sd, device: InputDevice, callback):
    """An unstarted sd.InputStream on `device`; NoInputDeviceError names it and the cause."""
    rate = int(device.default_rate)
    try:
        return sd.InputStream(
            device=device.index,
            channels=min(device.channels, 2),
            samplerate=rate,
            dtype="float32",
            blocksize=int(rate * BLOCK_S),
            callback=callback,
        )
    except (sd.PortAudioError, ValueError) as e:
        raise NoInputDeviceError(f"cannot open {device.name!r}: {e}") from e
