"""Degradation sources, built once into an .npz bank: `python -m training.noise [--out FILE]`.

Everything comes in two disjoint halves, "train" and "eval", so the evaluation never hears a noise
recording, a voice or a room the model was trained on:

- background: real recordings (ambience and effect files of the allowed game packages: birds,
  rivers, rain, crowds, workshops, radios), split by a hash of the file name;
- babble: espeak-ng speech, 3-6 talkers mixed, from disjoint voices and disjoint sentences;
- impulse responses: pyroomacoustics image-source rooms with RT60 0.2-1.0 s, from disjoint seeds.

Synthetic (white / pink / brown) noise needs no bank; degrade.py makes it on the fly.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from engine.core.audio import SAMPLE_RATE, load_audio
from engine.core.errors import AudioDecodeError
from training.corpus import SEED_PACKAGES, is_music_path, package_files, probe_duration_s

BANK_VERSION = 1
MIN_NOISE_S = 2.0  # shorter effects are clicks and bangs, not a background
MAX_NOISE_S = 400.0  # longer files in effect folders are music, not noise
# Folders holding speech or unit responses: a voice over music is babble's job, not this bank's.
SKIP_PARTS = ("voice", "speech", "/units/", "/campaigns/", "/titles/", "/storyline/")
# Music kept among effects (race-track themes, jingles): music over music is not a background.
MUSIC_WORDS = ("music", "theme", "remix", "intro", "rabbit_hole", "valkyries", "flute", "zik")
EVAL_NOISE_SHARE = 0.3  # share of background files held out for evaluation
IR_SECONDS = 1.0  # impulse responses are cut to this length (RT60 up to 1 s)
N_IR = {"train": 300, "eval": 100}
IR_SEEDS = {"train": 1, "eval": 2}  # disjoint rooms
RT60_RANGE = (0.2, 1.0)  # seconds
# espeak-ng voices for babble; the eval half uses other voices than the train half.
VOICES = {
    "train": ("en-us", "de", "fr", "es", "en", "ru", "pl", "sv"),
    "eval": ("en-gb-x-rp", "it", "pt", "nl", "cs", "fi"),
}
SENTENCES = {
    "train": (
        "The committee will meet again next week to discuss the budget for the new library.",
        "I told him twice that the train leaves at seven, but he still missed it.",
        "Could you pass me the salt and the pepper, and maybe a little more bread?",
        "Weather reports say the storm will reach the coast some time after midnight.",
        "She bought three tickets for the concert and then forgot where she put them.",
        "We should have taken the other road; this one is full of holes.",
        "Please remember to switch off the lights when you leave the office tonight.",
        "The children were playing in the garden until their grandmother called them in.",
    ),
    "eval": (
        "Nobody expected the old bridge to survive another winter, yet here it stands.",
        "My neighbour grows tomatoes on the balcony and gives half of them away.",
        "The meeting ran late because everyone wanted to talk about the holiday plans.",
        "If the printer jams again, just call the technician and take a break.",
        "Last summer we drove along the river for hours without seeing a single car.",
        "They say the museum will open a new hall full of paintings from the north.",
    ),
}
BABBLE_S = {"train": 300.0, "eval": 120.0}  # seconds of mixed babble per half
TALKERS = (3, 6)  # talkers per babble stream, inclusive


def noise_split(path: Path) -> str:
    """Deterministic train / eval assignment of one background recording, by file name."""
    u = int.from_bytes(hashlib.sha256(path.name.lower().encode()).digest()[:8], "big") / 2**64
    return "eval" if u < EVAL_NOISE_SHARE else "train"


def find_background_files(packages: Sequence[str] = SEED_PACKAGES) -> dict[str, list[Path]]:
    """Ambience / effect recordings from the allowed packages, split into train and eval.

    Only the first fourteen packages by default: the bank stays the one every shipped model was
    evaluated with, so figures before and after the corpus grew compare."""
    found: dict[str, list[Path]] = {"train": [], "eval": []}
    for package in packages:
        for path in package_files(package):
            text = str(path).lower()
            skip = SKIP_PARTS + MUSIC_WORDS
            if is_music_path(path) or any(part in text for part in skip):
                continue
            if MIN_NOISE_S <= probe_duration_s(path) <= MAX_NOISE_S:
                found[noise_split(path)].append(path)
    return found


def load_background(paths: Sequence[Path]) -> np.ndarray:
    """Decode and join recordings, each scaled to unit RMS, float32 (n,).

    Silent stretches are dropped so that a random window almost always holds some noise.
    """
    parts = []
    for path in paths:
        try:
            audio = load_audio(path)
        except AudioDecodeError:
            continue
        audio = _drop_silence(audio)
        rms = float(np.sqrt(np.mean(audio**2))) if audio.size else 0.0
        if rms > 1e-4 and audio.size >= SAMPLE_RATE:
            parts.append(audio / rms)
    if not parts:
        raise RuntimeError("no background recordings could be decoded")
    return np.concatenate(parts).astype(np.float32)


def _drop_silence(audio: np.ndarray, frame: int = 800, floor_db: float = -45.0) -> np.ndarray:
    """Remove 0.1 s frames quieter than floor_db below the loudest frame."""
    n = len(audio) // frame
    if n == 0:
        return audio
    frames = audio[: n * frame].reshape(n, frame)
    energy = np.mean(frames**2, axis=1) + 1e-12
    keep = 10 * np.log10(energy / energy.max()) > floor_db
    return frames[keep].reshape(-1)


def synthesize_speech(sentence: str, voice: str, workdir: Path) -> np.ndarray:
    """One espeak-ng utterance at SAMPLE_RATE, float32 (n,)."""
    wav = workdir / f"{abs(hash((sentence, voice)))}.wav"
    cmd = ["espeak-ng", "-v", voice, "-s", "160", "-w", str(wav), sentence]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"espeak-ng -v {voice} failed: {result.stderr.strip()[:200]}")
    return load_audio(wav)


def make_babble(half: str, rng: np.random.Generator) -> np.ndarray:
    """Several talkers at once, float32 (BABBLE_S[half] * SAMPLE_RATE,), unit RMS.

    Each talker is a random sequence of utterances with short pauses; 3-6 talkers are summed
    with random gains, and the mix changes talker count every 10 s.
    """
    with tempfile.TemporaryDirectory() as tmp:
        utterances = [
            synthesize_speech(s, v, Path(tmp)) for v in VOICES[half] for s in SENTENCES[half]
        ]
    total = int(BABBLE_S[half] * SAMPLE_RATE)
    block = 10 * SAMPLE_RATE
    out = np.zeros(total, np.float32)
    for start in range(0, total, block):
        n_talkers = int(rng.integers(TALKERS[0], TALKERS[1] + 1))
        for _ in range(n_talkers):
            stream = _talker_stream(utterances, block, rng)
            out[start : start + block] += stream[: total - start] * rng.uniform(0.5, 1.0)
    return out / max(float(np.sqrt(np.mean(out**2))), 1e-6)


def _talker_stream(utterances: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    parts, length = [], 0
    while length < n:
        pause = np.zeros(int(rng.uniform(0.05, 0.6) * SAMPLE_RATE), np.float32)
        speech = utterances[int(rng.integers(len(utterances)))]
        parts += [pause, speech / max(float(np.abs(speech).max()), 1e-6)]
        length += len(pause) + len(speech)
    stream = np.concatenate(parts)
    shift = int(rng.integers(0, max(1, len(stream) - n)))
    return stream[shift : shift + n]


def simulate_rirs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n shoebox-room impulse responses, float32 (n, IR_SECONDS * SAMPLE_RATE), and their RT60s.

    Rooms 3x3x2.5 m to 20x15x6 m, source and microphone at random places at least 0.5 m from
    the walls. Each response starts at its direct-path peak (the propagation delay is dropped so
    it does not add to the time offset) and is scaled to unit energy.
    """
    import pyroomacoustics as pra  # heavy import, only needed when building the bank

    rng = np.random.default_rng(seed)
    length = int(IR_SECONDS * SAMPLE_RATE)
    irs = np.zeros((n, length), np.float32)
    rt60s = rng.uniform(*RT60_RANGE, size=n)
    for i, rt60 in enumerate(rt60s):
        dims = rng.uniform([3.0, 3.0, 2.5], [20.0, 15.0, 6.0])
        # A large room cannot be as dry as a short RT60 asks (absorption > 1): shrink it until
        # it fits.
        while True:
            try:
                e_abs, max_order = pra.inverse_sabine(rt60, dims)
                break
            except ValueError:
                dims = np.maximum(dims * 0.85, [2.0, 2.0, 2.0])
        room = pra.ShoeBox(dims, fs=SAMPLE_RATE, materials=pra.Material(e_abs),
                           max_order=min(max_order, 60))  # fmt: skip
        room.add_source(rng.uniform(0.5, dims - 0.5))
        room.add_microphone(rng.uniform(0.5, dims - 0.5))
        room.compute_rir()
        h = np.asarray(room.rir[0][0], np.float32)
        h = h[max(0, int(np.argmax(np.abs(h))) - 2) :][:length]
        irs[i, : len(h)] = h / max(float(np.sqrt(np.sum(h**2))), 1e-9)
    return irs, rt60s.astype(np.float32)


def build_bank(
    out: str | Path = "corpus/degradations.npz",
    *,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Build all degradation sources and save them as one .npz (float16 audio, float32 IRs)."""
    say = progress or (lambda _msg: None)
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"version": np.array(BANK_VERSION)}
    files = find_background_files()
    for half in ("train", "eval"):
        say(f"{half}: {len(files[half])} background recordings")
        arrays[f"{half}_background"] = load_background(files[half]).astype(np.float16)
        arrays[f"{half}_background_files"] = np.array([str(p) for p in files[half]])
        say(f"{half}: babble from {len(VOICES[half])} voices")
        arrays[f"{half}_babble"] = make_babble(half, rng).astype(np.float16)
        say(f"{half}: {N_IR[half]} room impulse responses")
        irs, rt60s = simulate_rirs(N_IR[half], IR_SEEDS[half])
        arrays[f"{half}_ir"], arrays[f"{half}_rt60"] = irs, rt60s
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.noise", description=__doc__)
    parser.add_argument("--out", default="corpus/degradations.npz")
    args = parser.parse_args(argv)
    path = build_bank(args.out, progress=lambda msg: print(msg, file=sys.stderr))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
