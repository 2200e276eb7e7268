from pathlib import Path

import av
import numpy as np
import pytest

from engine.core import audio as audio_module
from engine.core.audio import (
    HOP_SAMPLES,
    SAMPLE_RATE,
    SEGMENT_SAMPLES,
    Resampler,
    count_segments,
    frame_segments,
    load_audio,
)
from engine.core.errors import AudioDecodeError
from tests.support.audio_files import FORMATS, write_audio


def sine(freq: float, seconds: float, rate: int) -> np.ndarray:
    return (0.5 * np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate)).astype(
        np.float32
    )


def dominant_hz(audio: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    return float(np.argmax(spectrum) * SAMPLE_RATE / len(audio))


def test_sine_fixture_has_its_frequency():
    assert dominant_hz(sine(440, 1.0, SAMPLE_RATE)) == pytest.approx(440, abs=1)


@pytest.mark.parametrize("suffix", sorted(FORMATS))
def test_every_format_decodes_to_8k_mono(tmp_path: Path, suffix: str):
    path = write_audio(tmp_path / f"a{suffix}", sine(440, 3.0, 44100), 44100)
    audio = load_audio(path)
    assert audio.dtype == np.float32 and audio.ndim == 1
    assert len(audio) / SAMPLE_RATE == pytest.approx(3.0, abs=0.1)
    assert dominant_hz(audio[SAMPLE_RATE : 2 * SAMPLE_RATE]) == pytest.approx(440, abs=2)


def test_stereo_is_downmixed(tmp_path: Path):
    left, right = sine(300, 2.0, 16000), sine(1000, 2.0, 16000)
    path = write_audio(tmp_path / "st.wav", np.stack([left, right], axis=1), 16000)
    spectrum = np.abs(np.fft.rfft(load_audio(path)[:SAMPLE_RATE]))
    assert spectrum[300] > 100 and spectrum[1000] > 100  # both channels are in the mono mix


@pytest.mark.parametrize(
    "content, cause",
    [
        (b"", "empty"),
        (b"this is not audio at all " * 100, "text"),
        (bytes(range(256)) * 64, "noise"),
    ],
)
def test_undecodable_files_raise_with_the_path(tmp_path: Path, content: bytes, cause: str):
    path = tmp_path / f"{cause}.mp3"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path)
    assert str(path) in str(err.value)


def test_missing_file_names_the_path(tmp_path: Path):
    with pytest.raises(AudioDecodeError, match="nope.flac"):
        load_audio(tmp_path / "nope.flac")


def test_truncated_file_keeps_its_decodable_start(tmp_path: Path):
    path = write_audio(tmp_path / "t.mp3", sine(440, 6.0, 44100), 44100)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    audio = load_audio(path)
    assert 2.0 < len(audio) / SAMPLE_RATE < 4.0


@pytest.mark.parametrize("name", ["album/one.flac", "album/two.mp3", "three.ogg"])
def test_files_resampled_in_blocks_give_the_samples_of_frame_by_frame(music_dir, name):
    """Libraries indexed before blocks were resampled hold the very same fingerprints."""
    with av.open(str(music_dir / name)) as container:
        resampler = Resampler()
        chunks = [resampler.frames(f) for f in container.decode(container.streams.audio[0])]
    frame_by_frame = np.concatenate([*chunks, resampler.frames(None)])
    np.testing.assert_array_equal(load_audio(music_dir / name), frame_by_frame)


def test_frames_decoded_before_an_error_still_come_out():
    frame = av.AudioFrame.from_ndarray(np.zeros((1, 1000), np.float32), format="flt", layout="mono")
    frame.sample_rate = 44100

    def decode():
        yield from [frame] * 3
        raise av.error.InvalidDataError(1094995529, "Invalid data found")

    runs = audio_module._frame_runs(decode())
    assert len(next(runs)) == 3
    with pytest.raises(av.error.InvalidDataError):
        next(runs)


def test_resampler_blocks_join_like_one_piece():
    x = sine(440, 2.0, 44100)
    whole = Resampler()
    one = np.concatenate([whole.block(x, 44100), whole.frames(None)])
    parts = Resampler()
    pieces = [parts.block(x[i : i + 4410], 44100) for i in range(0, len(x), 4410)]
    joined = np.concatenate([*pieces, parts.frames(None)])
    assert len(joined) == len(one) == 2 * SAMPLE_RATE
    np.testing.assert_allclose(joined, one, atol=1e-5)


def test_framing_counts_and_positions():
    audio = np.arange(3 * SAMPLE_RATE, dtype=np.float32)
    segments = frame_segments(audio)
    assert segments.shape == (5, SEGMENT_SAMPLES) == (count_segments(len(audio)), SEGMENT_SAMPLES)
    assert segments[3, 0] == 3 * HOP_SAMPLES


def test_short_audio_is_padded_to_one_segment():
    assert frame_segments(np.ones(100, np.float32)).shape == (1, SEGMENT_SAMPLES)


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("song.mp3", b"\x00" * 1000, "a damaged MP3 file, or not really MP3"),
        ("notes.txt", b"plain text, not music " * 50, "not an audio file"),
        ("empty.flac", b"", "the file is empty"),
        ("gone.ogg", None, "the file is not there any more"),
    ],
)
def test_a_file_that_cannot_be_decoded_is_skipped_for_a_reason_people_read(
    tmp_path: Path, name: str, content: bytes | None, reason: str
):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(AudioDecodeError) as refused:
        load_audio(path)
    assert refused.value.cause == reason and str(path) in str(refused.value)
    assert "Errno" not in str(refused.value)
