"""Corpus building blocks: split by track, same-music grouping, reserved packages refused."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tests.support.audio_files import music_like
from training.corpus import (
    UNSEEN_PACKAGES,
    assign_split,
    extract_music,
    group_same_music,
    is_music_path,
    music_signature,
    music_similarity,
    package_files,
    track_key,
    track_splits,
)


def test_track_key_joins_variants() -> None:
    assert track_key(Path("/x/music/Cocoa_River_fast.ogg")) == "cocoa_river"
    assert track_key(Path("/x/music/frantic-old.ogg")) == "frantic"
    assert track_key(Path("/x/music/airship_2.ogg")) == "airship"
    assert track_key(Path("/x/music/ingame_04.ogg")) == "ingame_04"  # a number, not a variant


def test_split_is_deterministic_and_about_80_10_10() -> None:
    keys = [f"track{i}" for i in range(3000)]
    splits = [assign_split(k) for k in keys]
    assert splits == [assign_split(k) for k in keys]
    share = {k: v / len(keys) for k, v in Counter(splits).items()}
    assert share["train"] == pytest.approx(0.8, abs=0.03)
    assert share["val"] == pytest.approx(0.1, abs=0.03)
    assert share["test"] == pytest.approx(0.1, abs=0.03)


def test_music_paths() -> None:
    assert is_music_path(Path("/usr/share/games/supertux2/music/forest/forest.ogg"))
    assert is_music_path(Path("/usr/share/games/frozen-bubble/snd/introzik.ogg"))
    assert not is_music_path(Path("/usr/share/games/supertuxkart/data/sfx/river_loop.ogg"))
    # Packages that keep their music elsewhere say where, and only for themselves.
    level_tune = Path("/usr/share/pushover/themes/aztec.ogg")
    assert is_music_path(level_tune, "pushover-data") and not is_music_path(level_tune)
    assert is_music_path(Path("/usr/share/games/openclonk/Music.ocg/Cavern.ogg"), "openclonk-data")
    assert is_music_path(Path("/x/data/music.pk3/sound/cdtracks/brokenlight.ogg"))


def test_music_inside_an_archive_is_unpacked_once(tmp_path: Path) -> None:
    archive = tmp_path / "music.pk3"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("sound/cdtracks/theme.ogg", b"OggS music")
        zf.writestr("sound/weapons/laser.ogg", b"OggS effect")
        zf.writestr("sound/cdtracks/readme.txt", b"not audio")
    out = tmp_path / "extracted"
    assert extract_music(archive, "nexuiz-music", out) == [out / "nexuiz-music" / "theme.ogg"]
    assert (out / "nexuiz-music" / "theme.ogg").read_bytes() == b"OggS music"
    assert extract_music(archive, "nexuiz-music", out) == [out / "nexuiz-music" / "theme.ogg"]


def test_held_out_packages_take_their_music_with_them() -> None:
    unseen = sorted(UNSEEN_PACKAGES)[0]
    splits = track_splits(groups=["a", "b", "c"], music=["m1", "m1", "m2"],
                          packages=[unseen, "widelands-data", "supertux-data"])  # fmt: skip
    # The same music in a training package goes with the unseen package's copy.
    assert splits == ["unseen", "unseen", "nonlibrary-a"]


def test_another_mix_of_the_same_music_is_grouped(rng: np.random.Generator) -> None:
    base = music_like(40.0, 8000, seed=1)
    remix = 0.7 * base + 0.01 * rng.standard_normal(len(base)).astype(np.float32)
    other = music_like(40.0, 8000, seed=2)
    sigs = [music_signature(a) for a in (base, remix, other)]
    assert music_similarity(sigs[0], sigs[1]) > 0.9
    assert music_similarity(sigs[0], sigs[2]) < 0.9
    assert group_same_music(["zeta", "alpha", "other"], sigs) == ["alpha", "alpha", "other"]
    # Tracks of clearly different length are never the same music ...
    assert music_similarity(sigs[0], music_signature(base[: 30 * 8000])) == 0.0
    # ... but one trimmed by a few seconds (another game's copy, its fade cut off) is.
    long = music_like(200.0, 8000, seed=3)
    trimmed = np.concatenate([long[4 * 8000 :], np.zeros(9 * 8000, np.float32)])  # 205 s
    assert music_similarity(music_signature(long), music_signature(trimmed)) > 0.95


def test_reserved_packages_are_refused() -> None:
    for package in ("0ad-data", "megaglest-data", "wesnoth-1.16-data"):
        with pytest.raises(ValueError, match="reserved"):
            package_files(package)
