"""Build the music corpus from Debian game-soundtrack packages: `python -m training.corpus`.

Every track is decoded once to 8 kHz mono and stored as float16 .npy, so training never decodes.
The split into train / val / test is by track and deterministic: a hash of a stable track key
(the file name without variant suffixes such as "_fast"), so a remix and its fast version, or one
file shipped by two packages, always land in the same split. Exact and near-exact duplicates
(the same decoded music) are dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import av
import numpy as np

from engine.audio import SAMPLE_RATE, load_audio
from engine.errors import AudioDecodeError

# Packages whose music may be used for training and tuning (DESIGN.md section 4).
MUSIC_PACKAGES = (
    "wesnoth-1.16-music", "freedroidrpg-data", "extremetuxracer-data", "neverball-common",
    "frozen-bubble-data", "fb-music-high", "supertuxkart-data", "widelands-data",
    "hedgewars-data", "supertux-data", "fillets-ng-data", "boswars-data", "pingus-data",
    "xmoto-data",
)  # fmt: skip
# Reserved for independent evaluation: never read, not for music, noise or anything else.
RESERVED_PACKAGES = frozenset({"0ad-data", "megaglest-data", "wesnoth-1.16-data"})

AUDIO_SUFFIXES = frozenset({".ogg", ".oga", ".mp3", ".flac", ".wav", ".opus"})
MIN_TRACK_S = 30.0  # shorter files are jingles or effects, not tracks
# A file is music when a folder on its path says so; game packages keep effects elsewhere.
MUSIC_DIR = re.compile(r"/(music|musics|bgm)/", re.IGNORECASE)
# frozen-bubble keeps its music ("zik", from "musique") in snd/ next to the effects.
MUSIC_NAME = re.compile(r"zik", re.IGNORECASE)
# Variants of one piece (tempo-up versions, old mixes) share a track key so they share a split.
VARIANT_SUFFIX = re.compile(r"([_-](fast|f|old|remix|remake|\d))+$", re.IGNORECASE)
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
ENVELOPE_HOP = SAMPLE_RATE // 2  # 0.5 s frames for the duplicate detector
DUPLICATE_CORR = 0.98  # envelope correlation above which two equally long tracks are one piece


@dataclass(frozen=True)
class Track:
    """One corpus entry, as stored in manifest.json."""

    key: str  # stable track key: decides the split
    package: str
    source: str  # the packaged file it was decoded from
    path: str  # the .npy file, relative to the corpus folder
    duration_s: float
    split: str


def ensure_packages(packages: Sequence[str] = MUSIC_PACKAGES) -> None:
    """Install the music packages with apt-get if any is missing (needs root; a no-op otherwise)."""
    missing = [p for p in packages if not _is_installed(p)]
    if not missing:
        return
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", *missing]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"apt-get could not install {missing}: {result.stderr.strip()[-400:]}")


def _is_installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return result.returncode == 0 and "install ok installed" in result.stdout


def package_files(package: str) -> list[Path]:
    """Files a Debian package installed (dpkg -L), audio suffixes only."""
    if package in RESERVED_PACKAGES:
        raise ValueError(f"{package} is reserved for independent evaluation and must not be read")
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dpkg -L {package} failed: {result.stderr.strip()}")
    paths = (Path(line) for line in result.stdout.splitlines())
    return sorted(p for p in paths if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())


def is_music_path(path: Path) -> bool:
    return bool(MUSIC_DIR.search(str(path)) or MUSIC_NAME.search(path.name))


def probe_duration_s(path: Path) -> float:
    """Container duration in seconds without decoding; 0.0 when unknown or unreadable."""
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            return (container.duration or 0) / 1e6
    except (av.FFmpegError, OSError, ValueError):
        return 0.0


def track_key(path: Path) -> str:
    """Stable key of the piece a file holds: lower-case stem without variant suffixes."""
    return VARIANT_SUFFIX.sub("", path.stem.lower()) or path.stem.lower()


def assign_split(key: str) -> str:
    """Deterministic split of a track key: ~80 % train, 10 % val, 10 % test."""
    u = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64
    edge = 0.0
    for name, share in SPLITS:
        edge += share
        if u < edge:
            return name
    return SPLITS[-1][0]


def find_music(packages: Iterable[str] = MUSIC_PACKAGES) -> list[tuple[str, Path]]:
    """(package, file) for every music file of at least MIN_TRACK_S, identical files once."""
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for package in packages:
        for path in package_files(package):
            if not is_music_path(path) or probe_duration_s(path) < MIN_TRACK_S:
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                found.append((package, path))
    return found


def _decode_one(job: tuple[str, str, str]) -> tuple[str, str, str, float, np.ndarray | None]:
    """Pool worker: decode one file to out_npy.

    Returns (package, source, npy, seconds, envelope); envelope is None if it does not decode.
    """
    package, source, out_npy = job
    try:
        audio = load_audio(source)
    except AudioDecodeError:
        return package, source, out_npy, 0.0, None
    np.save(out_npy, audio.astype(np.float16))
    return package, source, out_npy, len(audio) / SAMPLE_RATE, _envelope(audio)


def _envelope(audio: np.ndarray) -> np.ndarray:
    """RMS per 0.5 s frame, float32 (n_frames,): a coarse content signature for deduplication."""
    n = len(audio) // ENVELOPE_HOP
    frames = audio[: n * ENVELOPE_HOP].reshape(n, ENVELOPE_HOP)
    return np.sqrt(np.mean(frames.astype(np.float32) ** 2, axis=1))


def is_duplicate(env_a: np.ndarray, env_b: np.ndarray) -> bool:
    """Same decoded music: equal length within 1 s and near-identical loudness envelopes."""
    if abs(len(env_a) - len(env_b)) > 2 or min(len(env_a), len(env_b)) < 4:
        return False
    n = min(len(env_a), len(env_b))
    return float(np.corrcoef(env_a[:n], env_b[:n])[0, 1]) > DUPLICATE_CORR


def build_corpus(
    out_dir: str | Path = "corpus",
    *,
    packages: Sequence[str] = MUSIC_PACKAGES,
    install: bool = True,
    processes: int = 2,
    progress: Callable[[int, int, str], None] | None = None,
) -> list[Track]:
    """Decode every music file into out_dir/audio/*.npy and write out_dir/manifest.json.

    Already decoded files are reused, so a rerun after an interruption only does what is left.
    progress(done, total, source) is called after each file.
    """
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    if install:
        ensure_packages(packages)
    music = find_music(packages)
    jobs = [(pkg, str(src), str(out_dir / "audio" / _npy_name(pkg, src))) for pkg, src in music]
    tracks: list[Track] = []
    envelopes: list[np.ndarray] = []
    with Pool(processes) as pool:
        for done, result in enumerate(pool.imap(_decode_one, jobs), 1):
            package, source, npy, seconds, env = result
            if progress:
                progress(done, len(jobs), source)
            if env is None or seconds < MIN_TRACK_S:
                continue
            if any(is_duplicate(env, other) for other in envelopes):
                Path(npy).unlink(missing_ok=True)
                continue
            envelopes.append(env)
            key = track_key(Path(source))
            rel = str(Path(npy).relative_to(out_dir))
            tracks.append(Track(key, package, source, rel, round(seconds, 3), assign_split(key)))
    _write_manifest(out_dir, tracks)
    return tracks


def _npy_name(package: str, source: Path) -> str:
    digest = hashlib.sha1(str(source).encode()).hexdigest()[:8]
    return f"{package}__{source.stem}__{digest}.npy"


def _write_manifest(out_dir: Path, tracks: list[Track]) -> None:
    tracks_json = [asdict(t) for t in tracks]
    payload = {"sample_rate": SAMPLE_RATE, "dtype": "float16", "tracks": tracks_json}
    tmp = out_dir / "manifest.json.tmp"
    tmp.write_text(json.dumps(payload, indent=1))
    tmp.replace(out_dir / "manifest.json")


def load_manifest(corpus_dir: str | Path) -> list[Track]:
    """Read corpus_dir/manifest.json. Raises FileNotFoundError naming the file if absent."""
    path = Path(corpus_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no corpus manifest (run `nfp train corpus` first)")
    return [Track(**t) for t in json.loads(path.read_text())["tracks"]]


def hours_per_split(tracks: Iterable[Track]) -> dict[str, float]:
    hours = {name: 0.0 for name, _ in SPLITS}
    for t in tracks:
        hours[t.split] += t.duration_s / 3600
    return hours


def summary_lines(tracks: list[Track]) -> list[str]:
    """Human-readable per-split counts and hours."""
    hours = hours_per_split(tracks)
    lines = []
    for name, _ in SPLITS:
        n = sum(t.split == name for t in tracks)
        lines.append(f"{name:5s}: {n:4d} tracks, {hours[name]:6.2f} h")
    lines.append(f"total: {len(tracks):4d} tracks, {sum(hours.values()):6.2f} h")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.corpus", description=__doc__)
    add_corpus_arguments(parser)
    return run_corpus(parser.parse_args(argv))


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="corpus", help="corpus folder (default: corpus/)")
    parser.add_argument("--no-install", action="store_true", help="do not call apt-get")
    parser.add_argument("--processes", type=int, default=2, help="decoder processes (default 2)")


def run_corpus(args: argparse.Namespace) -> int:
    def report(done: int, total: int, source: str) -> None:
        print(f"\r[{done}/{total}] {Path(source).name[:50]:50s}", end="", file=sys.stderr)

    tracks = build_corpus(
        args.out, install=not args.no_install, processes=args.processes, progress=report
    )
    print(file=sys.stderr)
    print("\n".join(summary_lines(tracks)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
