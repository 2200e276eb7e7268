"""Audio in: decode any common format with PyAV to 8 kHz mono float32, and cut it into segments.

Files and live input share one path: both go through `Resampler`, so the model sees the same signal
whether the music came from disk or from a microphone.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np

from engine.core.errors import AudioDecodeError

log = logging.getLogger(__name__)

SAMPLE_RATE = 8000  # Hz, the seed's rate: enough for music identity, 5.5× less data than 44.1k
SEGMENT_S = 1.0  # one fingerprint covers this much audio
HOP_S = 0.5  # a new fingerprint every half second (50 % overlap)
SEGMENT_SAMPLES = int(SEGMENT_S * SAMPLE_RATE)  # 8000
HOP_SAMPLES = int(HOP_S * SAMPLE_RATE)  # 4000

# Suffixes a library scan looks at: anything PyAV decodes would work; these are music's.
AUDIO_EXTENSIONS = frozenset(
    {
        ".mp3",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".m4a",
        ".mp4",
        ".aac",
        ".wav",
        ".wma",
        ".aif",
        ".aiff",
        ".ape",
        ".wv",
        ".mka",
        ".webm",
    }
)
MIN_PARTIAL_S = 1.0  # a damaged file still yields its decodable start if at least this long
# Decoded samples handed to the resampler at once. Frame by frame (576 samples of Vorbis) the
# resampler's per-call cost was 0.65 of 0.91 CPU s for a 5.3 min track here; in blocks this size
# it is 0.64 s in all, with the very same output samples.
RESAMPLE_BLOCK_SAMPLES = 65536


class Resampler:
    """Streaming converter of float32 blocks at any rate and channel count to 8 kHz mono.

    Keeps filter state between calls, so consecutive blocks join without clicks.
    """

    def __init__(self) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)

    def frames(self, frame: av.AudioFrame | None) -> np.ndarray:
        """Resample one decoded frame (None flushes). Returns float32 (n,)."""
        out = self._resampler.resample(frame)
        if not out:
            return np.zeros(0, np.float32)
        return np.concatenate([f.to_ndarray().reshape(-1) for f in out]).astype(
            np.float32, copy=False
        )

    def block(self, samples: np.ndarray, rate: int) -> np.ndarray:
        """Resample a live block float32 (n,) mono or (n, channels) → float32 (m,) at 8 kHz."""
        samples = np.asarray(samples, np.float32)
        if samples.ndim == 1:
            samples = samples[:, None]
        layout = "mono" if samples.shape[1] == 1 else "stereo"
        if samples.shape[1] > 2:
            samples = samples.mean(axis=1, keepdims=True)
            layout = "mono"
        # PyAV's packed float layout is (1, n * channels), interleaved.
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(samples).reshape(1, -1), format="flt", layout=layout
        )
        frame.sample_rate = int(rate)
        return self.frames(frame)


def load_audio(path: str | Path) -> np.ndarray:
    """Decode a whole file to float32 (n,) mono at SAMPLE_RATE.

    Raises AudioDecodeError naming the file when nothing usable can be decoded.
    """
    path = Path(path)
    chunks: list[np.ndarray] = []
    try:
        for chunk in _decode_chunks(path):
            chunks.append(chunk)
    except (av.FFmpegError, ValueError, OSError, RuntimeError) as e:
        decoded_s = sum(len(c) for c in chunks) / SAMPLE_RATE
        if decoded_s < MIN_PARTIAL_S:
            raise AudioDecodeError(path, describe_failure(path, e, decoded_s)) from e
        log.warning("%s: decoding stopped after %.1f s (%s)", path, decoded_s,
                    describe_failure(path, e, decoded_s))  # fmt: skip
    audio = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    if audio.size == 0:
        empty = path.stat().st_size == 0
        raise AudioDecodeError(path, "the file is empty" if empty else "it holds no samples")
    if not np.isfinite(audio).all():
        audio = np.nan_to_num(audio, nan=0.0, posinf=0.0, neginf=0.0)
    return audio


def _decode_chunks(path: Path) -> Iterator[np.ndarray]:
    check_regular_file(path)
    # "file:" and an absolute path: FFmpeg would take a name like `tcp:HOST:PORT`, `pipe:0` or
    # `concat:…` for a URL and connect to it or read stdin.
    with av.open("file:" + os.fspath(path.absolute()), metadata_errors="ignore") as container:
        if not container.streams.audio:
            raise ValueError(NO_AUDIO_STREAM)
        stream = container.streams.audio[0]
        resampler = Resampler()
        for run in _frame_runs(container.decode(stream)):
            yield resampler.frames(_joined(run))
        yield resampler.frames(None)


def _frame_runs(frames: Iterator[av.AudioFrame]) -> Iterator[list[av.AudioFrame]]:
    """Consecutive frames of one sample format, layout and rate, RESAMPLE_BLOCK_SAMPLES or so at
    a time. Frames decoded before a decoding error come out before the error is raised (a damaged
    file keeps its decodable start)."""
    run: list[av.AudioFrame] = []
    samples = 0
    try:
        for frame in frames:
            if run and (samples >= RESAMPLE_BLOCK_SAMPLES or _kind(frame) != _kind(run[0])):
                yield run
                run, samples = [], 0
            run.append(frame)
            samples += frame.samples
    except Exception:
        if run:
            yield run
        raise
    if run:
        yield run


def _kind(frame: av.AudioFrame) -> tuple[str, str, int]:
    return frame.format.name, frame.layout.name, frame.sample_rate


def _joined(run: list[av.AudioFrame]) -> av.AudioFrame:
    """One frame of the samples of `run` (frames of one format, layout and rate), in order,
    without timestamps. FFmpeg's sample FIFO copies them: joining through numpy arrays (each
    frame to an array, one concatenation, one frame made from it) took 0.47 of the 2.35 CPU s
    that decoding 10 Ogg Vorbis tracks (24 min) took on a 2-core AMD EPYC, with the same samples."""
    if len(run) == 1:
        return run[0]
    fifo = av.AudioFifo()
    for frame in run:
        frame.pts = None  # the FIFO refuses frames whose timestamps leave a gap
        fifo.write(frame)
    joined = fifo.read()
    joined.pts = None  # as a frame made from an array has none
    return joined


NO_AUDIO_STREAM = "there is no sound in it: a video or an image without audio?"


class NotAFileError(OSError):
    """A path that is there but is no regular file (a pipe, a device, a socket): reading it
    could block forever or never end."""


def check_regular_file(path: Path) -> None:
    """Raise FileNotFoundError, IsADirectoryError or NotAFileError (naming the kind) unless
    path is a regular file (after following links)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError as e:
        raise FileNotFoundError(f"no such file: {path}") from e
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(f"a folder: {path}")
    if not stat.S_ISREG(mode):
        raise NotAFileError(f"{file_kind(mode)}, not a file")


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words."""
    kinds = {
        stat.S_ISFIFO: "a named pipe",
        stat.S_ISCHR: "a character device",
        stat.S_ISBLK: "a block device",
        stat.S_ISSOCK: "a socket",
        stat.S_ISDIR: "a folder",
    }
    return next((name for test, name in kinds.items() if test(mode)), "a special file")


def describe_failure(path: Path, e: BaseException, decoded_s: float = 0.0) -> str:
    """Why a file could not be decoded, in words for people (the skip reason a user reads):
    "not an audio file", "a damaged MP3 file", never FFmpeg's "[Errno 1094995529] …"."""
    kind = path.suffix.lower().lstrip(".")
    if isinstance(e, FileNotFoundError):
        return "the file is not there any more"
    if isinstance(e, PermissionError):
        return "permission denied: nfp may not read it"
    if isinstance(e, IsADirectoryError):
        return "it is a folder, not a file"
    if isinstance(e, NotAFileError):
        return f"it is {e}: nfp reads audio from files only"
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty"
    if f".{kind}" not in AUDIO_EXTENSIONS and decoded_s == 0:
        return "not an audio file"
    if str(e) == NO_AUDIO_STREAM:
        return NO_AUDIO_STREAM
    if isinstance(e, av.error.InvalidDataError) and decoded_s == 0:
        return f"a damaged {kind.upper()} file, or not really {kind.upper()}"
    if decoded_s:
        return f"a damaged {kind.upper() or 'audio'} file: decoding stopped after {decoded_s:.1f} s"
    text = getattr(e, "strerror", None) or str(e).strip() or type(e).__name__
    return f"FFmpeg cannot read it ({text.splitlines()[0][:160]})"


def frame_segments(audio: np.ndarray) -> np.ndarray:
    """Cut audio float32 (n,) into overlapping segments, float32 (n_segments, SEGMENT_SAMPLES).

    Segment i starts at i * HOP_S seconds. Audio shorter than one segment is zero-padded to one.
    """
    audio = np.asarray(audio, np.float32)
    if audio.size < SEGMENT_SAMPLES:
        audio = np.pad(audio, (0, SEGMENT_SAMPLES - audio.size))
    windows = np.lib.stride_tricks.sliding_window_view(audio, SEGMENT_SAMPLES)
    return windows[::HOP_SAMPLES]


def count_segments(n_samples: int) -> int:
    """Number of segments frame_segments makes from n_samples of audio."""
    return 1 + max(0, n_samples - SEGMENT_SAMPLES) // HOP_SAMPLES


def segment_start_s(i: int | np.ndarray) -> float | np.ndarray:
    """Start time in seconds of segment i."""
    return i * HOP_S
