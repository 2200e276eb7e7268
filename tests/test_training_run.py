"""A few training steps and the evaluation harness on a tiny synthetic corpus."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.library.tracks import Track as EngineTrack
from engine.model.checkpoint import default_checkpoint_path
from engine.model.fingerprint import Fingerprinter
from engine.model.load import load_checkpoint
from engine.model.scoring import BACKGROUND_ROWS, SILENCE_RMS, Scoring
from engine.model.torch_backend import load_torch
from engine.query.recognize import Recognizer
from tests.support.audio_files import music_like
from tests.support.tiny import TINY_CONFIG, make_tiny_checkpoint
from training.config import TrainConfig, load_config
from training.data import open_split
from training.degrade import Sources
from training.evaluate import (
    database_fingerprints,
    evaluate,
    harness_recognizer,
    load_corpus,
    room_background,
    store_results,
)
from training.outcomes import run_queries
from training.protocol import EvalConfig
from training.queries import make_queries, no_music_queries
from training.rates import accepted
from training.report import format_table
from training.trainer import EXPORT_MARGIN_S, make_sampler, train

SPLITS = {"train": 3, "val": 1, "test": 2, "unseen": 2, "nonlibrary-a": 1, "nonlibrary-b": 1}
TRACK_S = 24.0


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """corpus/ with manifest.json, float16 tracks in every split, and a degradation bank."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "audio").mkdir()
    tracks, seed = [], 0
    for split, count in SPLITS.items():
        for _ in range(count):
            seed += 1
            rel = f"audio/track{seed}.npy"
            np.save(root / rel, music_like(TRACK_S, 8000, seed).astype(np.float16))
            tracks.append({"key": f"track{seed}", "package": "synthetic", "source": rel,
                           "path": rel, "duration_s": TRACK_S, "split": split})  # fmt: skip
    (root / "manifest.json").write_text(json.dumps({"tracks": tracks}))
    rng = np.random.default_rng(0)
    bank = {}
    for half in ("train", "eval"):
        irs = np.zeros((4, 400), np.float32)
        irs[:, 0] = 1.0
        irs[:, 1:] = 0.05 * rng.standard_normal((4, 399))
        bank |= {
            f"{half}_background": rng.standard_normal(8000 * 12).astype(np.float16),
            f"{half}_babble": rng.standard_normal(8000 * 12).astype(np.float16),
            f"{half}_ir": irs,
            f"{half}_rt60": np.array([0.2, 0.5, 0.7, 1.0], np.float32),
        }
    np.savez(root / "degradations.npz", **bank)
    return root


def tiny_config(corpus: Path, out_dir: Path, steps: int) -> TrainConfig:
    return TrainConfig(width=0.0625, d=32, batch_size=8, steps=steps, warmup_steps=1,
                       corpus=str(corpus), bank=str(corpus / "degradations.npz"),
                       out_dir=str(out_dir), threads=1, checkpoint_every_s=0.0,
                       log_every=1)  # fmt: skip


def test_tiny_training_run_exports_and_resumes(tiny_corpus: Path, tmp_path: Path) -> None:
    reports = []
    path = train(tiny_config(tiny_corpus, tmp_path / "run", 3), callback=reports.append)
    kinds = [r.kind for r in reports]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("step") == 3
    assert all(np.isfinite(r.loss) for r in reports if r.kind == "step")
    ckpt = load_torch(path)
    assert ckpt.d == 32 and ckpt.training["steps"] == 3
    assert ckpt.training["data_hours"]["train"] == pytest.approx(3 * TRACK_S / 3600, rel=1e-3)
    # Rerunning with a larger budget resumes from step 3 instead of starting over.
    resumed = []
    path = train(tiny_config(tiny_corpus, tmp_path / "run", 5), callback=resumed.append)
    assert resumed[0].step == 3 and resumed[-1].step == 5
    # Each session is on record, with where it ran, for the model card to add up.
    sessions = load_torch(path).training["sessions"]
    assert [(x["first_step"], x["last_step"]) for x in sessions] == [(0, 3), (3, 5)]
    assert all(x["wall_s"] > 0 and "CPUs" in x["hardware"] for x in sessions)


def test_a_time_budget_counts_training_time_not_the_calendar(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """A run resumed days later on another machine continues its budget: the state's training
    time, not the clock, decides; session_minutes ends one session early."""
    cfg = replace(tiny_config(tiny_corpus, tmp_path / "run", 10_000), max_minutes=60.0,
                  session_minutes=0.02)  # fmt: skip
    path = train(cfg)
    first = load_torch(path).training
    assert 0 < first["steps"] < 10_000 and not first["complete"]
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    state["run"]["elapsed_s"] = 60 * 60.0  # as if the whole budget had been trained elsewhere
    torch.save(state, tmp_path / "run" / "state.pt")
    resumed = []
    train(replace(cfg, session_minutes=0.0), callback=resumed.append)
    assert resumed[-1].kind == "done" and resumed[-1].step == first["steps"]


def test_time_waiting_for_the_cpu_is_not_training_time(tiny_corpus: Path, tmp_path: Path) -> None:
    """On a machine shared with other jobs the budget counts what the run itself did: a step
    that waits (here a sampler that sleeps, as if the cores were taken) costs no budget."""
    cfg = tiny_config(tiny_corpus, tmp_path / "run", 3)
    sampler = make_sampler(cfg)

    class Waiting:
        def sample(self, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
            time.sleep(0.5)
            return sampler.sample(n_pairs, rng)

    training = load_torch(train(cfg, sampler=Waiting())).training
    assert training["wall_time_s"] >= 1.5 > training["training_time_s"] + 0.5


def test_a_finished_run_given_a_larger_budget_goes_on(tiny_corpus: Path, tmp_path: Path) -> None:
    """Raising max_minutes of a run that has used its whole budget continues it (a warm
    restart); resuming it under the same budget takes no further step."""
    done = load_torch(train(tiny_config(tiny_corpus, tmp_path / "run", 3))).training
    assert done["complete"] and done["steps"] == 3
    state = torch.load(tmp_path / "run" / "state.pt", weights_only=True)
    # As if it had been a 1-minute run that used its budget up to the export margin.
    state["run"].update(budget_s=60.0, elapsed_s=60.0 - EXPORT_MARGIN_S)
    torch.save(state, tmp_path / "run" / "state.pt")
    cfg = replace(tiny_config(tiny_corpus, tmp_path / "run", 3), max_minutes=1.0)
    same = []
    again = load_torch(train(cfg, callback=same.append)).training
    assert same[-1].kind == "done" and same[-1].step == 3
    assert again["sessions"] == done["sessions"]  # a session that trained nothing is no session
    longer = load_torch(train(replace(cfg, max_minutes=1.05))).training  # 3 s more
    assert longer["steps"] > 3


def test_the_triplet_loss_trains_and_an_unknown_loss_is_refused(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    reports = []
    cfg = replace(tiny_config(tiny_corpus, tmp_path / "run", 2), loss="triplet", margin=0.4)
    path = train(cfg, callback=reports.append)
    losses = [r.loss for r in reports if r.kind == "step"]
    assert len(losses) == 2 and all(np.isfinite(x) and x >= 0.0 for x in losses)
    assert load_torch(path).training["config"]["loss"] == "triplet"
    with pytest.raises(ValueError, match="unknown loss 'arcface'"):
        train(replace(cfg, loss="arcface", out_dir=str(tmp_path / "other")))


def test_an_scnn_lite_run_starts_from_an_scnn_checkpoint_narrowed(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    cfg = replace(tiny_config(tiny_corpus, tmp_path / "scnn", 2), width=0.125)
    source = train(cfg)
    lite = replace(cfg, encoder="scnn_lite", init=str(source), out_dir=str(tmp_path / "lite"))
    ckpt = load_torch(train(lite))
    assert ckpt.config.name == "scnn_lite" and ckpt.model.front[0].conv_f.out_channels == 8
    assert ckpt.training["config"]["init"] == str(source)
    other = replace(cfg, d=64, init=str(source), out_dir=str(tmp_path / "other"))
    with pytest.raises(ValueError, match=f"{source}: its encoder .* is not this run's"):
        train(other)


def test_resumed_run_matches_an_uninterrupted_one(tiny_corpus: Path, tmp_path: Path) -> None:
    straight = train(tiny_config(tiny_corpus, tmp_path / "a", 4))
    train(tiny_config(tiny_corpus, tmp_path / "b", 2))
    resumed = train(tiny_config(tiny_corpus, tmp_path / "b", 4))
    a, b = load_torch(straight).model.state_dict(), load_torch(resumed).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_overrides_and_errors(tmp_path: Path) -> None:
    cfg = load_config(None, ["d=64", "snr_db=0,5", "lr=3e-4"])
    assert cfg.d == 64 and cfg.snr_db == (0.0, 5.0) and cfg.lr == pytest.approx(3e-4)
    with pytest.raises(ValueError, match="unknown training config fields: nonsense"):
        load_config(None, ["nonsense=1"])
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        load_config(bad)


def test_a_phones_degradations_reach_the_training_replicas(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """lead_prob and mp3_prob (the harness's high level) are trainable, not only evaluated."""
    quiet = replace(tiny_config(tiny_corpus, tmp_path, 1), snr_db=(90.0, 90.0), ir_prob=0.0,
                    echo_prob=0.0, band_prob=0.0, offset_s=0.0)  # fmt: skip
    rng = np.random.default_rng(0)
    clean, plain = make_sampler(quiet).sample(16, rng)
    assert np.allclose(plain, clean, atol=1e-3)
    _, late = make_sampler(replace(quiet, lead_prob=1.0)).sample(16, np.random.default_rng(0))
    silent_start = np.abs(late[:, :200]).max(axis=1) < 1e-3
    assert silent_start.mean() > 0.8  # a lead-in of 0-30 % of 8000 samples; under 200 is rare
    _, coded = make_sampler(replace(quiet, mp3_prob=1.0)).sample(16, np.random.default_rng(0))
    correlation = (
        np.sum(coded * clean, axis=1)
        / np.linalg.norm(coded, axis=1)
        / np.linalg.norm(clean, axis=1)
    )
    assert np.all(correlation > 0.5) and not np.allclose(coded, clean, atol=1e-3)


def test_noise_rows_hold_no_music_and_train(tiny_corpus: Path, tmp_path: Path) -> None:
    """noise_rows draws replicas of silence (the bank's noise alone) as every pair's negatives."""
    cfg = replace(tiny_config(tiny_corpus, tmp_path / "run", 2), noise_rows=4, clip_prob=0.0)
    sampler = make_sampler(cfg)
    rng = np.random.default_rng(0)
    clean, _ = sampler.sample(8, rng)
    noise = sampler.sample_noise(4, rng)
    assert noise.shape == (4, clean.shape[1]) and np.all(np.std(noise, axis=1) > 0.1)
    correlation = noise @ clean.T / np.outer(np.linalg.norm(noise, axis=1),
                                             np.linalg.norm(clean, axis=1))  # fmt: skip
    assert np.abs(correlation).max() < 0.3
    reports = []
    path = train(cfg, callback=reports.append)
    assert all(np.isfinite(r.loss) for r in reports if r.kind == "step")
    assert load_torch(path).training["config"]["noise_rows"] == 4
    with pytest.raises(ValueError, match="noise_rows needs loss ntxent"):
        train(replace(cfg, loss="triplet", out_dir=str(tmp_path / "triplet")))


def test_eval_harness_is_deterministic_and_complete(tiny_corpus: Path, tmp_path: Path) -> None:
    checkpoint = make_tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = EvalConfig(checkpoint=str(checkpoint), corpus=str(tiny_corpus),
                     bank=str(tiny_corpus / "degradations.npz"), out_dir=str(tmp_path / "eval"),
                     queries=6, nonlibrary_queries=4, no_music_queries=3, levels=("low", "high"),
                     lengths_s=(1.0, 3.0), stretch_tempos=(0.95, 1.05),
                     stretch_lengths_s=(3.0,), room_rows=12)  # fmt: skip
    first, background = evaluate(cfg)
    again, background_again = evaluate(EvalConfig(**{**cfg.__dict__, "out_dir": ""}))
    assert first["hit_rates"] == again["hit_rates"]
    np.testing.assert_array_equal(background, background_again)
    music = len(background) - cfg.room_rows
    assert background.shape[1] == TINY_CONFIG.d and 0 < music <= BACKGROUND_ROWS
    np.testing.assert_allclose(np.linalg.norm(background, axis=1), 1.0, atol=1e-3)
    assert first["protocol"]["room_rows"] == 12
    rooms = room_background(Fingerprinter(load_checkpoint(checkpoint)), cfg.bank, 12, cfg.seed)
    np.testing.assert_array_equal(background[music:], rooms)
    assert set(first["hit_rates"]) == {"low", "high"}
    assert set(first["hit_rates"]["low"]) == {"1", "3"}
    assert set(first["hit_rates_in_domain"]) == {"low", "high"}
    for rates in (first["hit_rates"]["high"]["3"], first["hit_rates_in_domain"]["high"]["3"]):
        assert 0.0 <= rates["exact"] <= rates["near"] <= rates["song"] <= 1.0
        assert rates["queries"] == 6
    stretch = first["hit_rates_stretch"]
    assert stretch["level"] == "mid" and set(stretch["by_tempo"]) == {"0.95", "1.05"}
    assert 0.0 <= stretch["by_tempo"]["1.05"]["3"]["song"] <= 1.0
    # Thresholds keyed by query segments, as engine.query.search reads them: 1 s → 1, 3 s → 5.
    assert set(first["calibration"]["evidence_threshold"]) == {"1", "5"}
    assert 0.0 <= first["false_positive_rate_all"] <= 1.0
    assert 0.0 <= first["false_positive_rate_swapped"] <= 1.0
    measured = first["false_positives"]
    lo, hi = measured["all"]["ci95"]
    assert measured["measured_on"] == "nonlibrary-b" and lo <= measured["all"]["rate"] <= hi
    assert measured["all"]["queries"] == 2 * 2 * 4  # levels × lengths × nonlibrary_queries
    assert first["calibration"]["calibrated_on"] == "nonlibrary-a"
    room = first["false_positives_no_music"]
    assert room["measured_on"] == "no-music" and room["all"]["queries"] == 2 * 2 * 3
    assert first["calibration"]["scoring"] == Scoring(room_rows=12).to_dict()
    for name in ("results.json", "table.txt", "hit_rate.png", "scores.png"):
        assert (tmp_path / "eval" / name).stat().st_size > 0
    table = format_table(first)
    assert "false positive" in table and "unseen/in-dom" in table and "x1.05" in table
    assert "a room with no music" in table


def test_library_queries_are_never_cut_from_silence(tiny_corpus: Path) -> None:
    """A track whose second half is digital silence (a gap before a hidden track, a long fade)
    gives queries of its music only: silence is not a query of the library."""
    sources = Sources.load(tiny_corpus / "degradations.npz", "eval")
    half_silent = np.concatenate([music_like(20.0, 8000, 3), np.zeros(20 * 8000, np.float32)])
    queries = make_queries([half_silent], "mid", 2.0, 40, sources, np.random.default_rng(0))
    starts = (queries.start_s * 8000).astype(int)
    assert all(np.sqrt(np.mean(half_silent[s : s + 16000] ** 2)) >= SILENCE_RMS for s in starts)
    room = no_music_queries("mid", 2.0, 5, sources, np.random.default_rng(0))
    assert room.audio.shape == (5, 16000) and np.all(room.track == -1)
    assert np.all(np.sqrt(np.mean(room.audio**2, axis=1)) > 0.05)  # the noise, and nothing else
    with pytest.raises(ValueError, match="almost all silence"):
        make_queries(
            [np.zeros(60 * 8000, np.float32)], "mid", 2.0, 4, sources, np.random.default_rng(0)
        )


def test_the_harness_counts_what_identify_reports(tiny_corpus: Path) -> None:
    """The harness's confident answers are exactly the queries `nfp identify` would name, with
    the same track and offset, once its calibration is in the checkpoint."""
    cfg = EvalConfig(checkpoint=str(default_checkpoint_path()), corpus=str(tiny_corpus),
                     bank=str(tiny_corpus / "degradations.npz"), distractors="none")  # fmt: skip
    checkpoint = load_checkpoint(cfg.checkpoint)
    recognizer, background = harness_recognizer(checkpoint, load_corpus(cfg), cfg)
    sources = Sources.load(cfg.bank, "eval")
    tracks = load_corpus(cfg).held_out
    queries = make_queries(tracks, "mid", 2.0, 12, sources, np.random.default_rng(1))
    outcome = run_queries(queries, "unseen", recognizer)
    # As every calibration the harness writes: with the scoring constants it was made under.
    # One threshold at every length, the median evidence: about half are named, whatever the
    # segments each query could use.
    median = float(np.median(outcome.evidence))
    calibration = {"evidence_threshold": {"1": median, "3": median},
                   "scoring": Scoring().to_dict()}  # fmt: skip
    sure = accepted(outcome, calibration)
    assert 0 < sure.sum() < len(sure)  # the test means something only with both kinds
    calibrated = replace(checkpoint, evaluation={"calibration": calibration},
                         background=background)  # fmt: skip
    listed = [_track(i) for i in range(len(tracks))]
    shard = recognizer.catalogue.shards[0]
    app = Recognizer(None, calibrated, searched=(shard.index, shard.segments, listed))
    for q, audio in enumerate(queries.audio):
        match = app.identify(audio)
        assert (match is not None) == sure[q]
        if match is not None:
            assert match.track.id == outcome.found_track[q]
            assert match.offset_s == pytest.approx(outcome.offset_s[q])


def _track(i: int) -> EngineTrack:
    return EngineTrack(id=i, path=f"/music/{i}.ogg", title=str(i), artist="", album="",
                       duration_s=24.0, first_segment=0, n_segments=0)  # fmt: skip


def test_database_fingerprints_are_kept_per_model_and_remade_when_damaged(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """A second run reads the first run's fingerprints; another model or damaged file does not."""
    cfg = EvalConfig(checkpoint="", corpus=str(tiny_corpus), distractors="resampled")
    corpus, cache = load_corpus(cfg), tmp_path / "cache"
    tiny = Fingerprinter(load_checkpoint(make_tiny_checkpoint(tmp_path / "tiny.pt")))
    made = database_fingerprints(tiny, corpus, cache)
    (kept,) = cache.iterdir()
    assert [len(made[name]) for name in ("held_out", "train", "copies")] == [5, 3, 6]
    for name, fps in database_fingerprints(tiny, corpus, cache).items():
        for stored, fresh in zip(fps, made[name], strict=True):
            np.testing.assert_array_equal(stored, fresh)
    kept.write_bytes(b"not an npz")
    remade = database_fingerprints(tiny, corpus, cache)
    np.testing.assert_array_equal(remade["copies"][0], made["copies"][0])
    shipped = Fingerprinter(load_checkpoint(default_checkpoint_path()))
    assert database_fingerprints(shipped, corpus, cache)["train"][0].shape[1] == shipped.d
    assert len(list(cache.iterdir())) == 2


def test_an_earlier_runs_results_are_stored_with_the_background_it_drew(
    tiny_corpus: Path, tmp_path: Path
) -> None:
    """`nfp eval --write-checkpoint --from-results DIR` stores what the run itself would have."""
    checkpoint = make_tiny_checkpoint(tmp_path / "tiny.pt")
    cfg = EvalConfig(checkpoint=str(checkpoint), corpus=str(tiny_corpus),
                     bank=str(tiny_corpus / "degradations.npz"), out_dir=str(tmp_path / "eval"),
                     queries=4, nonlibrary_queries=4, levels=("mid",), lengths_s=(3.0,),
                     stretch_tempos=(), room_rows=9)  # fmt: skip
    result, background = evaluate(cfg)
    other = make_tiny_checkpoint(tmp_path / "other.pt", seed=1)
    with pytest.raises(ValueError, match="another checkpoint"):
        store_results(replace(cfg, checkpoint=str(other)), tmp_path / "eval")
    # The run's own seed and room rows, whatever the command line says now.
    store_results(replace(cfg, seed=5, room_rows=0), tmp_path / "eval")
    stored = load_torch(checkpoint)
    assert stored.evaluation["hit_rates"] == result["hit_rates"]
    np.testing.assert_allclose(stored.background, background, atol=1e-3)  # stored as float16


def test_eval_gives_the_same_hit_rates_on_onnx_runtime_as_on_torch(
    tiny_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness through either backend, with the shipped model: every cell within one
    query, the same calibration to the noise in the last digits."""
    results = {}
    for backend in ("torch", "onnx"):
        monkeypatch.setenv("NFP_BACKEND", backend)
        cfg = EvalConfig(checkpoint=str(default_checkpoint_path()), corpus=str(tiny_corpus),
                         bank=str(tiny_corpus / "degradations.npz"), out_dir="", queries=10,
                         nonlibrary_queries=10, distractors="none", levels=("low", "high"),
                         lengths_s=(1.0, 3.0), stretch_tempos=())  # fmt: skip
        results[backend] = evaluate(cfg)[0]
    for level, by_length in results["torch"]["hit_rates"].items():
        for length, rates in by_length.items():
            onnx = results["onnx"]["hit_rates"][level][length]
            for kind in ("exact", "near", "song"):
                assert abs(rates[kind] - onnx[kind]) <= 1 / 10 + 1e-9, (level, length, kind)


def test_joined_split_follows_the_manifest(tiny_corpus: Path, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, corpus)
    audio, bounds = open_split(corpus, "train")
    assert len(bounds) == SPLITS["train"] + 1 and len(audio) == bounds[-1]
    manifest = json.loads((corpus / "manifest.json").read_text())
    manifest["tracks"][-1]["split"] = "train"  # move a test track into train
    (corpus / "manifest.json").write_text(json.dumps(manifest))
    _, bounds = open_split(corpus, "train")
    assert len(bounds) == SPLITS["train"] + 2
