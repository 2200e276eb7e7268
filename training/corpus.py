"""Build the music corpus from Debian game-soundtrack packages: `python -m training.corpus`.

Every track is decoded once to 8 kHz mono and stored as float16 .npy, so training never decodes.
The split into train / val / test is by track and deterministic: a hash of a stable group key,
so a tempo-up version ("_fast"), another mix of the same music or one file shipped by two packages
always lands in the same split as its original (no leak from the database into the held-out
music). The group is the file name without variant suffixes, joined with every track whose
per-second spectra match (music_similarity). Copies (identical files, or the same decoded music)
are dropped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from multiprocessing import Pool
from pathlib import Path

import av
import numpy as np

from engine.core.audio import SAMPLE_RATE, load_audio
from engine.core.errors import AudioDecodeError
from engine.core.features import log_mel

# Packages whose music may be used for training and tuning (DESIGN.md section 4): the first
# fourteen, which also give the degradation bank its real noise (noise.py), ...
SEED_PACKAGES = (
    "wesnoth-1.16-music", "freedroidrpg-data", "extremetuxracer-data", "neverball-common",
    "frozen-bubble-data", "fb-music-high", "supertuxkart-data", "widelands-data",
    "hedgewars-data", "supertux-data", "fillets-ng-data", "boswars-data", "pingus-data",
    "xmoto-data",
)  # fmt: skip
# ... and the fourteen added later (about 15.8 h of tracks; two keep theirs in .pk3 archives).
ADDED_PACKAGES = (
    "ufoai-music", "nexuiz-music", "planetblupi-music-ogg", "naev-data", "colobot-common-sounds",
    "singularity-music", "unknown-horizons", "flare-game", "redeclipse-data", "pushover-data",
    "openclonk-data", "lincity-ng-data", "freeorion-data", "tomatoes-data",
)  # fmt: skip
MUSIC_PACKAGES = SEED_PACKAGES + ADDED_PACKAGES
# Reserved for independent evaluation: never read, not for music, noise or anything else.
RESERVED_PACKAGES = frozenset({"0ad-data", "megaglest-data", "wesnoth-1.16-data"})

AUDIO_SUFFIXES = frozenset({".ogg", ".oga", ".mp3", ".flac", ".wav", ".opus"})
ARCHIVE_SUFFIXES = frozenset({".pk3"})  # zip archives of Quake-engine games (ufoai, nexuiz)
MIN_TRACK_S = 30.0  # shorter files are jingles or effects, not tracks
# A file is music when a folder on its path says so; game packages keep effects elsewhere.
MUSIC_DIR = re.compile(r"/(music|musics|bgm|cdtracks)/", re.IGNORECASE)
# frozen-bubble keeps its music ("zik", from "musique") in snd/ next to the effects.
MUSIC_NAME = re.compile(r"zik", re.IGNORECASE)
# Packages whose music sits where no music folder says so.
MUSIC_PLACES = {
    "pushover-data": re.compile(r"/pushover/themes/[^/]+$"),  # one tune per level theme
    "openclonk-data": re.compile(r"/Music\.ocg/"),
    "freeorion-data": re.compile(r"/sound/artificial_intelligence[^/]*$"),  # its one theme
}
# Variants of one piece (tempo-up versions, old mixes) share a track key so they share a split.
VARIANT_SUFFIX = re.compile(r"([_-](fast|f|old|remix|remake|\d))+$", re.IGNORECASE)
SPLITS = (("train", 0.8), ("val", 0.1), ("test", 0.1))
# Whole packages kept out of training but in the evaluation library: the harness's queries from
# them measure music of composers and styles the model never heard (4 packages, 89 tracks, 4.2 h),
# beside the in-domain test and val tracks of the packages it trained on.
UNSEEN_PACKAGES = frozenset({"naev-data", "colobot-common-sounds", "flare-game", "openclonk-data"})
# Whole packages kept out of training and out of the evaluation library: the harness plays them
# as music a user does not own. Two parts that share no package, one to calibrate the
# confidence threshold on and one to measure its false-positive rate with; tracks of one game
# often quote each other, so a package never straddles the parts. 100 tracks, 3.1 h.
NONLIBRARY_PARTS = {
    "supertux-data": "nonlibrary-a",  # 45 tracks, 1.62 h
    "supertuxkart-data": "nonlibrary-b",  # 35 tracks, 0.97 h
    "neverball-common": "nonlibrary-b",  # 7 tracks, 0.15 h
    "extremetuxracer-data": "nonlibrary-b",  # 6 tracks, 0.15 h
    "xmoto-data": "nonlibrary-b",  # 7 tracks, 0.19 h
}
PACKAGE_SPLITS = {**NONLIBRARY_PARTS, **dict.fromkeys(UNSEEN_PACKAGES, "unseen")}
SPLIT_NAMES = (*(name for name, _ in SPLITS), "unseen", "nonlibrary-a", "nonlibrary-b")
# Two files hold the same music (another mix, a re-encode, a trimmed copy) when, at about equal
# length, their per-second mel spectra match this well (cosine of centred spectra, at the best
# lag up to their difference in length + 2 s). Measured on this corpus: a re-mix pair
# (freedroidrpg AmbientBattle / TechBattle) scores 0.93, the most alike unrelated pair 0.87, and
# one free piece shipped by two games, trimmed differently (supertux's and flare's
# battle_theme, 200 and 205 s), 0.998.
SAME_MUSIC = 0.9
DUPLICATE = 0.99  # above this the second file is a copy and is dropped
MAX_LENGTH_DIFF_S = 3  # lengths always close enough to compare ...
MAX_LENGTH_DIFF = 0.05  # ... and so are lengths within 5 % (a fade or silence trimmed off)


@dataclass(frozen=True)
class Track:
    """One corpus entry, as stored in manifest.json."""

    key: str  # stable track key: decides the split
    package: str
    source: str  # the packaged file it was decoded from
    path: str  # the .npy file, relative to the corpus folder
    duration_s: float
    split: str
    group: str = ""  # key shared by every file of the same music; decides the split


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
    """Files a Debian package installed (dpkg -L), audio and archive suffixes only."""
    if package in RESERVED_PACKAGES:
        raise ValueError(f"{package} is reserved for independent evaluation and must not be read")
    result = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"dpkg -L {package} failed: {result.stderr.strip()}")
    paths = (Path(line) for line in result.stdout.splitlines())
    suffixes = AUDIO_SUFFIXES | ARCHIVE_SUFFIXES
    return sorted(p for p in paths if p.suffix.lower() in suffixes and p.is_file())


def is_music_path(path: Path, package: str = "") -> bool:
    place = MUSIC_PLACES.get(package)
    return bool(MUSIC_DIR.search(str(path)) or MUSIC_NAME.search(path.name)
                or (place and place.search(str(path))))  # fmt: skip


def extract_music(archive: Path, package: str, out_dir: Path) -> list[Path]:
    """Unpack the music files of a zip archive (a .pk3) into out_dir/package/; already
    unpacked ones are kept. Returns their paths."""
    extracted = []
    with zipfile.ZipFile(archive) as zf:
        for member in zf.namelist():
            inner = Path(archive, member)  # music is recognised by its folder inside the archive
            if Path(member).suffix.lower() not in AUDIO_SUFFIXES or not is_music_path(inner):
                continue
            target = out_dir / package / Path(member).name
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp = target.with_name(target.name + ".tmp")
                tmp.write_bytes(zf.read(member))
                tmp.replace(target)
            extracted.append(target)
    return extracted


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


def track_splits(groups: Sequence[str], music: Sequence[str], packages: Sequence[str]) -> list[str]:
    """Each track's split: the split its package is held out in (unseen, a non-library part),
    or that of any track holding the same music (music: one label per set of such tracks), so
    no music is heard on both sides; otherwise by the hash of its group."""
    parts: dict[str, str] = {}
    for label, package in sorted(zip(music, packages, strict=True)):
        if package in PACKAGE_SPLITS:
            parts.setdefault(label, PACKAGE_SPLITS[package])
    return [parts.get(label) or assign_split(group)
            for group, label in zip(groups, music, strict=True)]  # fmt: skip


def find_music(
    packages: Iterable[str] = MUSIC_PACKAGES, extract_dir: Path = Path("corpus/extracted")
) -> list[tuple[str, Path]]:
    """(package, file) for every music file of at least MIN_TRACK_S, identical files once;
    music inside archives is unpacked into extract_dir first."""
    found: list[tuple[str, Path]] = []
    seen: set[str] = set()
    for package in packages:
        for path in music_files(package, extract_dir):
            if probe_duration_s(path) < MIN_TRACK_S:
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest not in seen:
                seen.add(digest)
                found.append((package, path))
    return found


def music_files(package: str, extract_dir: Path) -> list[Path]:
    """The package's music files, those inside its archives unpacked into extract_dir."""
    files = []
    for path in package_files(package):
        if path.suffix.lower() in ARCHIVE_SUFFIXES:
            files += extract_music(path, package, extract_dir)
        elif is_music_path(path, package):
            files.append(path)
    return files


def _decode_one(job: tuple[str, str, str]) -> tuple[str, str, str, float, np.ndarray | None]:
    """Pool worker: decode one file to out_npy (or reuse an earlier decode).

    Returns (package, source, npy, seconds, signature); signature is None if it does not decode.
    """
    package, source, out_npy = job
    if Path(out_npy).is_file():
        audio = np.load(out_npy).astype(np.float32)
    else:
        try:
            audio = load_audio(source)
        except AudioDecodeError:
            return package, source, out_npy, 0.0, None
        np.save(out_npy, audio.astype(np.float16))
    return package, source, out_npy, len(audio) / SAMPLE_RATE, music_signature(audio)


def music_signature(audio: np.ndarray) -> np.ndarray:
    """Mean log-mel spectrum of every whole second, centred and unit-norm, float32 (n_s, 256)."""
    n = len(audio) // SAMPLE_RATE
    if n == 0:
        return np.zeros((0, 256), np.float32)
    spectra = log_mel(audio[: n * SAMPLE_RATE].reshape(n, SAMPLE_RATE)).squeeze(1).mean(-1)
    spectra = spectra - spectra.mean(axis=1, keepdims=True)
    return spectra / (np.linalg.norm(spectra, axis=1, keepdims=True) + 1e-9)


def music_similarity(sig_a: np.ndarray, sig_b: np.ndarray, max_lag: int = 2) -> float:
    """How alike two tracks' signatures are: best mean cosine over lags of ±(max_lag + their
    difference in length) seconds; 0.0 for tracks whose lengths differ by more than
    MAX_LENGTH_DIFF_S and MAX_LENGTH_DIFF of the longer."""
    diff, longer = abs(len(sig_a) - len(sig_b)), max(len(sig_a), len(sig_b))
    if diff > max(MAX_LENGTH_DIFF_S, MAX_LENGTH_DIFF * longer) or min(len(sig_a), len(sig_b)) < 4:
        return 0.0
    best = 0.0
    for lag in range(-max_lag - diff, max_lag + diff + 1):
        a, b = sig_a[max(0, lag) :], sig_b[max(0, -lag) :]
        n = min(len(a), len(b))
        best = max(best, float(np.mean(np.sum(a[:n] * b[:n], axis=1))))
    return best


def group_same_music(keys: Sequence[str], signatures: Sequence[np.ndarray]) -> list[str]:
    """A group key per track: the smallest track key among all tracks holding the same music
    (similarity >= SAME_MUSIC, joined transitively), so they all land in one split."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for i in range(len(keys)):
        for j in range(i + 1, len(keys)):
            if music_similarity(signatures[i], signatures[j]) >= SAME_MUSIC:
                parent[root(j)] = root(i)
    members: dict[int, list[str]] = {}
    for i, key in enumerate(keys):
        members.setdefault(root(i), []).append(key)
    return [min(members[root(i)]) for i in range(len(keys))]


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
    music = find_music(packages, out_dir / "extracted")
    jobs = [(pkg, str(src), str(out_dir / "audio" / _npy_name(pkg, src))) for pkg, src in music]
    kept: list[tuple[str, str, str, float]] = []
    signatures: list[np.ndarray] = []
    with Pool(processes) as pool:
        for done, (package, source, npy, seconds, sig) in enumerate(
            pool.imap(_decode_one, jobs), 1
        ):
            if progress:
                progress(done, len(jobs), source)
            if sig is None or seconds < MIN_TRACK_S:
                continue
            if any(music_similarity(sig, other) >= DUPLICATE for other in signatures):
                Path(npy).unlink(missing_ok=True)
                continue
            kept.append((package, source, npy, seconds))
            signatures.append(sig)
    keys = [track_key(Path(source)) for _, source, _, _ in kept]
    groups = group_same_music(keys, signatures)
    packages = [package for package, *_ in kept]
    # Unrelated files of two games may share a name ("menu"): the label a group takes is not
    # enough to tell which tracks hold the same music, the package-qualified one is.
    music = group_same_music([f"{p}/{k}" for p, k in zip(packages, keys, strict=True)], signatures)
    splits = track_splits(groups, music, packages)
    tracks = [
        Track(key=key, package=package, source=source, split=split, group=group,
              path=str(Path(npy).relative_to(out_dir)), duration_s=round(seconds, 3))
        for key, group, split, (package, source, npy, seconds)
        in zip(keys, groups, splits, kept, strict=True)
    ]  # fmt: skip
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
    hours = dict.fromkeys(SPLIT_NAMES, 0.0)
    for t in tracks:
        hours[t.split] += t.duration_s / 3600
    return hours


def summary_lines(tracks: list[Track]) -> list[str]:
    """Human-readable per-split counts and hours."""
    hours = hours_per_split(tracks)
    lines = []
    for name in SPLIT_NAMES:
        n = sum(t.split == name for t in tracks)
        lines.append(f"{name:12s}: {n:4d} tracks, {hours[name]:6.2f} h")
    lines.append(f"{'total':12s}: {len(tracks):4d} tracks, {sum(hours.values()):6.2f} h")
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
