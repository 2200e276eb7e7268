"""engine.core.mic with a stand-in sounddevice module: PortAudio failures are NoInputDeviceError."""

import sys
import types

import numpy as np
import pytest

from engine.core import mic
from engine.core.errors import NoInputDeviceError

MIC = mic.InputDevice(3, "USB Mic", 1, 16000.0, True)


class PortAudioError(Exception):
    """Stands in for sd.PortAudioError (which the code under test must catch by that name)."""


class FakeStream:
    """An InputStream that fails where told to, or delivers one block then goes quiet."""

    def __init__(self, fail: str | None, **kwargs) -> None:
        if fail == "open":
            raise PortAudioError("Error opening InputStream: Device unavailable [-9985]")
        self.fail = fail
        self.callback = kwargs["callback"]
        self.closed = False

    def start(self) -> None:
        if self.fail == "start":
            raise PortAudioError("Error starting stream: Unanticipated host error [-9999]")
        self.callback(np.zeros((1600, 1), np.float32), 1600, None, None)

    def close(self) -> None:
        self.closed = True
        if self.fail == "close":
            raise PortAudioError("Error closing stream: device vanished")


@pytest.fixture
def fake_sd(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A sounddevice module whose failures the test chooses through `fail` and `query_error`."""
    sd = types.SimpleNamespace(PortAudioError=PortAudioError, fail=None, streams=[])
    sd.default = types.SimpleNamespace(device=(0, 1))
    devices = [{"name": "USB Mic", "max_input_channels": 1, "default_samplerate": 16000.0}]

    def query_devices():
        if sd.fail == "query":
            raise PortAudioError("Error querying device -1")
        return devices

    def input_stream(**kwargs):
        sd.streams.append(FakeStream(sd.fail, **kwargs))
        return sd.streams[-1]

    sd.query_devices, sd.InputStream = query_devices, input_stream
    monkeypatch.setitem(sys.modules, "sounddevice", sd)
    monkeypatch.setattr(mic, "FIRST_BLOCK_TIMEOUT_S", 0.05)
    monkeypatch.setattr(mic, "READ_TIMEOUT_S", 0.05)
    return sd


@pytest.mark.parametrize(
    ("fail", "cause"),
    [("open", "cannot open 'USB Mic': Error opening"), ("start", "cannot start 'USB Mic'")],
)
def test_a_device_that_fails_to_open_or_start_is_named(fake_sd, fail: str, cause: str):
    fake_sd.fail = fail
    with pytest.raises(NoInputDeviceError, match=cause):
        next(mic.record_blocks(MIC))
    assert all(stream.closed for stream in fake_sd.streams)


def test_failing_to_query_devices_is_no_input_device(fake_sd):
    fake_sd.fail = "query"
    with pytest.raises(NoInputDeviceError, match="cannot query audio devices: Error querying"):
        mic.resolve_device(None)


def test_blocks_arrive_until_the_device_stops_and_the_stream_is_closed(fake_sd):
    assert mic.resolve_device("usb") == mic.InputDevice(0, "USB Mic", 1, 16000.0, True)
    fake_sd.fail = "close"  # a vanished device also fails to close; that must not hide the cause
    blocks = mic.record_blocks(MIC)
    block, rate = next(blocks)
    assert block.shape == (1600, 1) and rate == 16000
    with pytest.raises(NoInputDeviceError, match="'USB Mic' stopped delivering audio"):
        next(blocks)
    assert fake_sd.streams[0].closed


def test_the_stream_closes_when_the_caller_stops_listening(fake_sd):
    blocks = mic.record_blocks(MIC)
    next(blocks)
    blocks.close()
    assert fake_sd.streams[0].closed


def test_portaudio_missing_is_no_input_device(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "sounddevice", None)  # import then raises ImportError
    with pytest.raises(NoInputDeviceError, match="PortAudio is not available"):
        mic.input_devices()
