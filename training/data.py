"""Training pairs from the precomputed corpus: a clean 1 s segment and its degraded replica.

A split's tracks are joined once into one float16 file (`corpus/<split>.f16` plus an offsets
file) and memory-mapped, so two training processes share one copy in the page cache and drawing
a batch is a single fancy-indexing gather.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from engine.core.audio import SAMPLE_RATE, SEGMENT_SAMPLES
from training.corpus import load_manifest
from training.degrade import DegradeParams, Sources, degrade


def open_split(corpus_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """The split's audio joined, float16 (n,) memory-mapped, and track bounds int64 (n_tracks+1,).

    Track i is audio[bounds[i]:bounds[i+1]]. The joined file is built on first use (atomically)
    and rebuilt whenever manifest.json has changed since.
    """
    corpus_dir = Path(corpus_dir)
    data_path = corpus_dir / f"{split}.f16"
    bounds_path = corpus_dir / f"{split}.bounds.json"
    manifest_sha = hashlib.sha256((corpus_dir / "manifest.json").read_bytes()).hexdigest()
    if not (data_path.is_file() and _joined_for(bounds_path, manifest_sha)):
        _join_split(corpus_dir, split, data_path, bounds_path, manifest_sha)
    bounds = np.asarray(json.loads(bounds_path.read_text())["bounds"], np.int64)
    audio = np.memmap(data_path, dtype=np.float16, mode="r")
    if len(audio) != bounds[-1]:
        raise ValueError(f"{data_path}: {len(audio)} samples, bounds say {bounds[-1]}; delete it")
    return audio, bounds


def _joined_for(bounds_path: Path, manifest_sha: str) -> bool:
    """Whether the joined file was made from this manifest (older caches: no)."""
    if not bounds_path.is_file():
        return False
    meta = json.loads(bounds_path.read_text())
    return isinstance(meta, dict) and meta.get("manifest_sha256") == manifest_sha


def _join_split(
    corpus_dir: Path, split: str, data_path: Path, bounds_path: Path, manifest_sha: str
) -> None:
    tracks = [t for t in load_manifest(corpus_dir) if t.split == split]
    if not tracks:
        raise ValueError(f"{corpus_dir}/manifest.json: no tracks in split {split!r}")
    bounds = [0]
    tmp = data_path.with_name(data_path.name + f".{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        for t in tracks:
            audio = np.load(corpus_dir / t.path).astype(np.float16)
            f.write(audio.tobytes())
            bounds.append(bounds[-1] + len(audio))
    # A running trainer keeps its memory map of the old file: replace, never rewrite in place.
    tmp.replace(data_path)
    bounds_path.write_text(json.dumps({"manifest_sha256": manifest_sha, "bounds": bounds}))


def gather_at_speed(audio: np.ndarray, first: np.ndarray, rate: np.ndarray, n: int) -> np.ndarray:
    """Rows of n samples read from audio (n_audio,) starting at first int64 (B,), each played at
    its rate float64 (B,) (1.05: 5 % faster, tempo and pitch together, as a DJ's pitch fader or
    a sped-up broadcast), by linear interpolation; float32 (B, n)."""
    pos = first[:, None] + rate[:, None] * np.arange(n)
    lo = np.floor(pos).astype(np.int64)
    frac = (pos - lo).astype(np.float32)
    left = audio[lo].astype(np.float32)
    return left + frac * (audio[lo + 1].astype(np.float32) - left)


class PairSampler:
    """Draws batches of (clean, replica) 1 s segment pairs from one corpus split.

    Positions are uniform over all usable audio (long tracks are drawn more often); near-silent
    clean segments are drawn again, since silence matches silence in every track. A share
    (speed_prob) of the replicas is played up to speed_max faster or slower.
    """

    def __init__(
        self,
        audio: np.ndarray,
        bounds: np.ndarray,
        sources: Sources,
        params: DegradeParams,
        *,
        offset_s: float = 0.2,
        context_s: float = 0.5,
        min_rms: float = 1e-3,
        speed_prob: float = 0.0,
        speed_max: float = 0.05,
    ) -> None:
        self.audio, self.sources, self.params = audio, sources, params
        self.max_offset = int(offset_s * SAMPLE_RATE)
        self.context = int(context_s * SAMPLE_RATE)
        self.min_rms = min_rms
        self.speed_prob, self.speed_max = speed_prob, speed_max
        # Valid clean starts leave room for the offset and the (faster) context before, the
        # offset and a faster replica after.
        most = 1 + speed_max if speed_prob > 0 else 1.0
        lo = bounds[:-1] + self.max_offset + int(np.ceil(self.context * most))
        hi = bounds[1:] - int(np.ceil(SEGMENT_SAMPLES * most)) - self.max_offset - (most > 1)
        keep = hi > lo
        self._lo, self._cum = lo[keep], np.concatenate([[0], np.cumsum((hi - lo)[keep])])
        if self._cum[-1] <= 0:
            raise ValueError("no track is long enough for a training pair")

    def sample(self, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """clean float32 (n_pairs, 8000), replica float32 (n_pairs, 8000)."""
        starts = self._clean_starts(n_pairs, rng)
        clean = self.audio[starts[:, None] + np.arange(SEGMENT_SAMPLES)].astype(np.float32)
        shift = rng.integers(-self.max_offset, self.max_offset + 1, size=n_pairs)
        window = self.context + SEGMENT_SAMPLES
        if self.speed_prob > 0:
            rate = self._rates(n_pairs, rng)
            # The replica's segment starts where the clean one does (give or take the shift);
            # its context before it is read at its own speed.
            first = starts + shift - rate * self.context
            raw = gather_at_speed(self.audio, first, rate, window)
        else:  # a plain gather: no interpolation, and the random draws of runs before speeds
            first = starts + shift - self.context
            raw = self.audio[first[:, None] + np.arange(window)].astype(np.float32)
        replica = degrade(raw, SEGMENT_SAMPLES, self.params, self.sources, rng)
        return clean, replica

    def sample_noise(self, count: int, rng: np.random.Generator) -> np.ndarray:
        """count replicas of no music at all, float32 (count, 8000): what a phone hears in a
        room before the music starts (background, voices, synthetic noise, clipping, MP3)."""
        silence = np.zeros((count, self.context + SEGMENT_SAMPLES), np.float32)
        return degrade(silence, SEGMENT_SAMPLES, self.params, self.sources, rng)

    def _rates(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Playback rate of each replica, float64 (n,): 1 or uniform in 1 ± speed_max."""
        changed = rng.random(n) < self.speed_prob
        drawn = 1 + rng.uniform(-self.speed_max, self.speed_max, size=n)
        return np.where(changed, drawn, 1.0)

    def _clean_starts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n start samples of non-silent clean segments, int64 (n,)."""
        found = np.zeros(0, np.int64)
        for _ in range(8):  # silence is rare; a few redraws always suffice on real music
            u = rng.integers(0, self._cum[-1], size=2 * n)
            track = np.searchsorted(self._cum, u, side="right") - 1
            starts = self._lo[track] + (u - self._cum[track])
            probe = self.audio[starts[:, None] + np.arange(0, SEGMENT_SAMPLES, 4)]
            rms = np.sqrt(np.mean(probe.astype(np.float32) ** 2, axis=1))
            found = np.concatenate([found, starts[rms >= self.min_rms]])
            if len(found) >= n:
                return found[:n]
        raise ValueError("the corpus split is almost all silence")
