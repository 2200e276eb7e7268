"""Catalogues: shards searched together answer as one library holding them all."""

import json
from pathlib import Path

import numpy as np
import pytest

from engine.cli import main as nfp
from engine.core.audio import SAMPLE_RATE
from engine.core.errors import IndexMismatchError, NfpError
from engine.core.steps import run_steps
from engine.library.index import VectorIndex
from engine.library.indexing import index_folder
from engine.library.library import Library
from engine.model.fingerprint import Fingerprinter
from engine.query.recognize import Recognizer
from engine.query.shards import Catalogue, merge_top_k, read_catalogue
from engine.query.stream import LiveMatcher
from tests.support.audio_files import music_like, write_audio
from tests.support.spectral import spectral_checkpoint

CALIBRATION = {"evidence_threshold": {"3": 0.6, "9": 1.0, "19": 1.2}}
SECONDS = 30.0
FOLDERS = {"a": range(0, 4), "b": range(4, 7)}  # shard → seeds of its tracks


def unit_rows(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    rows = rng.standard_normal((n, d)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_merged_top_k_is_the_top_k_of_all_rows(rng):
    parts = [unit_rows(rng, n) for n in (50, 3, 80)]  # one shard has fewer rows than k
    queries = unit_rows(rng, 7)
    found = [VectorIndex.build(p).search(queries, min(10, len(p))) for p in parts]
    scores, ids = merge_top_k(found, [0, 50, 53], 10)
    want_scores, want_ids = VectorIndex.build(np.concatenate(parts)).search(queries, 10)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-6)
    np.testing.assert_array_equal(ids, want_ids)


def test_missing_neighbours_stay_missing_after_a_merge():
    scores = np.array([[0.9, -np.inf]], np.float32)
    ids = np.array([[4, -1]])
    merged_scores, merged_ids = merge_top_k([(scores, ids), (scores[:, :1], ids[:, :1])],
                                            [0, 10], 3)  # fmt: skip
    assert merged_ids.tolist() == [[4, 14, -1]]
    assert merged_scores[0, 2] == -np.inf


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> dict[str, Path]:
    """Libraries "a" and "b" of two music folders, and "all" holding both folders."""
    root = tmp_path_factory.mktemp("shards")
    checkpoint = spectral_checkpoint(CALIBRATION)
    for name, seeds in FOLDERS.items():
        (root / name).mkdir()
        for seed in seeds:
            write_audio(root / name / f"song{seed}.wav", music_like(SECONDS, 8000, seed), 8000)
        index(Library(root / f"db-{name}"), root / name, checkpoint)
        index(Library(root / "db-all"), root / name, checkpoint)
    return {name: root / f"db-{name}" for name in ("a", "b", "all")}


def index(library: Library, folder: Path, checkpoint) -> None:
    with library:
        run_steps(index_folder(library, folder, Fingerprinter(checkpoint)))


def recognizers(shards: dict[str, Path]) -> tuple[Recognizer, Recognizer]:
    checkpoint = spectral_checkpoint(CALIBRATION)
    catalogue = Catalogue.open([shards["a"], shards["b"]], checkpoint)
    whole = Library(shards["all"], writable=False)
    return Recognizer(catalogue, checkpoint), Recognizer(whole, checkpoint)


def excerpts() -> list[np.ndarray]:
    """Noisy excerpts of every track at several offsets, and a stretch of no library music."""
    rng = np.random.default_rng(3)
    out = [music_like(6.0, SAMPLE_RATE, 99)]
    for seed in (s for seeds in FOLDERS.values() for s in seeds):
        track = music_like(SECONDS, SAMPLE_RATE, seed)
        for start_s, length_s in ((2.3, 2.0), (11.0, 5.0), (20.6, 8.0)):
            piece = track[int(start_s * SAMPLE_RATE) : int((start_s + length_s) * SAMPLE_RATE)]
            out.append(piece + 0.05 * rng.standard_normal(len(piece)).astype(np.float32))
    return out


def test_two_shards_answer_as_one_library_holding_both(shards):
    sharded, whole = recognizers(shards)
    assert len(sharded.tracks) == len(whole.tracks) == 7
    for audio in excerpts():
        got, want = sharded.best_match(audio), whole.best_match(audio)
        assert sharded.tracks[got.track].path == whole.tracks[want.track].path
        assert (got.offset_s, got.start_segment) == (want.offset_s, want.start_segment)
        assert got.evidence == pytest.approx(want.evidence, rel=1e-5)
        assert got.confidence == pytest.approx(want.confidence, rel=1e-5)
    found = {m.track.path for m in map(sharded.identify, excerpts()) if m}
    assert len(found) == 7  # the comparison is between real answers, not two empty ones


def test_a_track_list_across_shards_is_one_librarys(shards):
    sharded, whole = recognizers(shards)
    first, second = music_like(SECONDS, SAMPLE_RATE, 1), music_like(SECONDS, SAMPLE_RATE, 5)
    recording = np.concatenate([first[: 12 * SAMPLE_RATE], second[4 * SAMPLE_RATE :]])
    got, want = sharded.tracklist(recording), whole.tracklist(recording)
    assert [Path(e.track.path).name for e in got] == ["song1.wav", "song5.wav"]
    assert [e.to_json() for e in got] == [e.to_json() for e in want]


def test_listening_follows_a_track_of_the_second_shard(shards):
    sharded, _ = recognizers(shards)
    audio = music_like(SECONDS, SAMPLE_RATE, 6)[5 * SAMPLE_RATE : 17 * SAMPLE_RATE]
    matcher = LiveMatcher(sharded)
    states = [matcher.push(audio[i : i + 800], SAMPLE_RATE) for i in range(0, len(audio), 800)]
    last = states[-1]
    assert last.status == "matched" and Path(last.match.track.path).name == "song6.wav"
    assert last.match.offset_s == pytest.approx(17.0, abs=0.6)


def test_identify_over_db_flags_prints_what_one_library_prints(tmp_path, capsys):
    for name, seeds in FOLDERS.items():
        (tmp_path / name).mkdir()
        for seed in seeds:
            write_audio(tmp_path / name / f"song{seed}.wav", music_like(SECONDS, 8000, seed), 8000)
        for db in (f"db-{name}", "db-all"):
            assert nfp(["index", str(tmp_path / name), "--db", str(tmp_path / db)]) == 0
    query = tmp_path / "query.wav"
    write_audio(query, music_like(SECONDS, 8000, 5)[8 * 8000 : 14 * 8000], 8000)
    listing = tmp_path / "catalogue.txt"
    listing.write_text("# two shards\ndb-a\n\ndb-b\n")
    capsys.readouterr()
    answers = []
    for flags in (["--db", "db-all"], ["--db", "db-a", "--db", "db-b"], ["--catalogue", ""]):
        paths = [str(listing) if f == "" else str(tmp_path / f) if f.startswith("db") else f
                 for f in flags]  # fmt: skip
        assert nfp(["identify", str(query), "--json", *paths]) == 0
        answers.append(json.loads(capsys.readouterr().out)["match"])
    assert answers[0] is not None and answers[0]["title"] == "song5"
    assert answers[1] == answers[0] == answers[2]


def test_a_catalogue_file_names_its_shards_relative_to_itself(tmp_path):
    listing = tmp_path / "cat" / "shards.txt"
    listing.parent.mkdir()
    listing.write_text("# shards\nnorth\n  /abs/south  \n\n")
    assert read_catalogue(listing) == [listing.parent / "north", Path("/abs/south")]
    listing.write_text("# nothing\n")
    with pytest.raises(NfpError, match="lists no library"):
        read_catalogue(listing)
    with pytest.raises(NfpError, match="cannot read the catalogue"):
        read_catalogue(tmp_path / "missing.txt")


def test_db_and_catalogue_together_is_one_error_line(shards, tmp_path, capsys):
    listing = tmp_path / "catalogue.txt"
    listing.write_text(f"{shards['a']}\n")
    query = tmp_path / "q.wav"
    write_audio(query, music_like(3.0, 8000, 1), 8000)
    status = nfp(["identify", str(query), "--db", str(shards["b"]), "--catalogue", str(listing)])
    assert status == 1
    assert "not both" in capsys.readouterr().err


def test_a_shard_made_by_other_weights_is_refused(shards):
    other = spectral_checkpoint(CALIBRATION, d=32)
    with pytest.raises(IndexMismatchError, match=str(shards["b"])):
        Catalogue.open([shards["b"]], other)


@pytest.mark.slow
def test_shards_held_by_dask_workers_answer_as_one_library(shards):
    from distributed import Client, LocalCluster

    checkpoint = spectral_checkpoint(CALIBRATION)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster) as client:  # fmt: skip
        remote = Recognizer(Catalogue.open([shards["a"], shards["b"]], checkpoint,
                                           client=client), checkpoint)  # fmt: skip
        _, whole = recognizers(shards)
        held = {w["id"] for w in client.scheduler_info()["workers"].values()}
        assert len(held) == 2
        for audio in excerpts()[:8]:
            got, want = remote.best_match(audio), whole.best_match(audio)
            assert remote.tracks[got.track].path == whole.tracks[want.track].path
            assert got.offset_s == want.offset_s
            assert got.confidence == pytest.approx(want.confidence, rel=1e-5)
