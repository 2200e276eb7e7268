"""Contrastive training of a fingerprint encoder (Chang et al.): resumable, reports via a callback.

Each step draws N/2 clean 1 s segments and N/2 degraded replicas (offset up to ±offset_s, room,
echo, device, background noise), turns both into log-mel, masks the replicas' spectrograms
(SpecAugment), encodes all N and minimises the configured loss
(NT-Xent, or a semi-hard triplet loss).

A run lives in cfg.out_dir: state.pt (model, optimiser, step, schedule plan, random states; written
every checkpoint_every_s and at the end, so rerunning the same command resumes), log.jsonl (one
line per progress report) and model.pt (the exported engine checkpoint).

A run may span several sessions on different machines: the time budget (max_minutes) counts
training time (the CPU time of the training loop's thread, training_clock), not the calendar,
and session_minutes (wall clock) ends one session early, so committing
state.pt and rerunning the command elsewhere continues the same schedule. Every session's
hardware, steps and wall time are kept in the state and reported in the exported checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from engine.core.features import log_mel
from engine.core.threads import cpu_model
from engine.model.encoders import build_encoder, count_parameters
from engine.model.export import save_checkpoint
from engine.model.torch_backend import load_torch
from training.augment import spec_augment
from training.config import TrainConfig
from training.corpus import hours_per_split, load_manifest
from training.data import PairSampler, open_split
from training.degrade import Sources
from training.loss import nt_xent, semi_hard_triplet
from training.schedule import get_lr
from training.warm_start import load_initial_weights

EXPORT_MARGIN_S = 30.0  # time kept free before a deadline for the last state and the export
TIMING_EMA = 0.9  # smoothing of the measured seconds per step


@dataclass(frozen=True)
class Progress:
    """One report from the training loop; kind is "start", "step", "checkpoint" or "done"."""

    kind: str
    step: int  # steps completed
    steps: int  # planned schedule length
    loss: float
    lr: float
    s_per_step: float  # smoothed training time per step (training_clock), data included
    data_s_per_step: float  # smoothed time spent making the batch
    eta_s: float
    elapsed_s: float  # training time (training_clock) over all sessions of this run


@dataclass
class RunState:
    """What a resumed run needs besides the model and optimiser."""

    step: int = 0
    planned_steps: int = 0
    budget_s: float = 0.0  # training time the whole run may take; 0: a step budget
    elapsed_s: float = 0.0
    s_per_step: float = 0.0
    data_s_per_step: float = 0.0
    loss: float = float("nan")
    data_hours: dict = field(default_factory=dict)  # corpus hours per split when the run began
    sessions: list = field(default_factory=list)  # one dict per session: where, when, how long


def train(
    cfg: TrainConfig,
    *,
    resume: bool = True,
    callback: Callable[[Progress], None] | None = None,
    sampler: PairSampler | None = None,
) -> Path:
    """Train (or resume) the run in cfg.out_dir; returns the exported model.pt path.

    sampler defaults to one over the corpus's train split and the bank's train half; tests pass
    one over synthetic audio.
    """
    report = callback or (lambda _p: None)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    model = build_encoder(cfg.encoder_config())
    optimizer = make_optimizer(model, cfg)
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    state = RunState(planned_steps=cfg.steps)
    state_path = out_dir / "state.pt"
    if resume and state_path.is_file():
        state = _load_state(state_path, model, optimizer, rng, generator)
    else:
        state.data_hours = _data_hours(cfg)
        if cfg.init:
            _load_weights(cfg.init, model, cfg)
    # Both budgets may be raised or lowered on resume: a longer run continues the same schedule.
    raised = cfg.max_minutes * 60 > state.budget_s > 0
    state.budget_s = cfg.max_minutes * 60
    if state.budget_s <= 0:
        state.planned_steps = cfg.steps
    elif raised and state.step >= state.planned_steps:
        _replan(state, cfg)  # a finished run given a larger budget goes on (a warm restart)
    sampler = sampler or make_sampler(cfg)
    _loop(cfg, model, optimizer, sampler, state, rng, generator, state_path, report)
    return _export(cfg, model, state)


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "lamb":
        from pytorch_optimizer import Lamb  # only needed for large-batch runs

        return Lamb(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; choose adam or lamb")


def make_sampler(cfg: TrainConfig) -> PairSampler:
    audio, bounds = open_split(cfg.corpus, "train")
    return PairSampler(
        audio, bounds, Sources.load(cfg.bank, "train"), cfg.degrade_params(),
        offset_s=cfg.offset_s, context_s=cfg.context_s, min_rms=cfg.min_rms,
        speed_prob=cfg.speed_prob, speed_max=cfg.speed_max,
    )  # fmt: skip


def batch_loss(
    z_a: torch.Tensor, z_b: torch.Tensor, cfg: TrainConfig, z_neg: torch.Tensor | None = None
) -> torch.Tensor:
    """The configured loss of paired embeddings z_a, z_b float (N, d) and unpaired negatives
    z_neg float (M, d); a scalar tensor."""
    if cfg.loss == "ntxent":
        return nt_xent(z_a, z_b, cfg.tau, z_neg)
    if cfg.loss == "triplet":
        if z_neg is not None and len(z_neg):
            raise ValueError("noise_rows needs loss ntxent: the triplet loss has no place for them")
        return semi_hard_triplet(z_a, z_b, cfg.margin)
    raise ValueError(f"unknown loss {cfg.loss!r}; choose ntxent or triplet")


def train_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    clean: np.ndarray,
    replica: np.ndarray,
    cfg: TrainConfig,
    generator: torch.Generator,
    noise: np.ndarray | None = None,
) -> float:
    """One optimisation step on clean, replica float32 (P, 8000) and noise float32 (M, 8000),
    replicas of no music that are every pair's negatives; returns the loss."""
    n = len(clean)
    rows = [clean, replica] if noise is None else [clean, replica, noise]
    mel = torch.from_numpy(log_mel(np.concatenate(rows)))  # (2P + M, 1, 256, 32)
    augmented = spec_augment(
        mel[n:], generator, cutout_prob=cfg.cutout_prob, cutout_max_frac=cfg.cutout_max_frac,
        freq_masks=cfg.freq_masks, freq_mask_max=cfg.freq_mask_max,
    )  # fmt: skip
    z = model(torch.cat([mel[:n], augmented]))
    loss = batch_loss(z[:n], z[n : 2 * n], cfg, z[2 * n :])
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _loop(
    cfg: TrainConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    sampler: PairSampler,
    state: RunState,
    rng: np.random.Generator,
    generator: torch.Generator,
    state_path: Path,
    report: Callable[[Progress], None],
) -> None:
    model.train()
    n_pairs = cfg.batch_size // 2
    report(_progress("start", state, cfg))
    last_save = session_start = time.time()
    trained_before, trained_start = state.elapsed_s, training_clock()
    session = _start_session(state)
    session_end = session_start + cfg.session_minutes * 60 if cfg.session_minutes > 0 else 0.0
    while not _finished(state) and not (session_end and time.time() >= session_end):
        t0 = training_clock()
        clean, replica = sampler.sample(n_pairs, rng)
        noise = sampler.sample_noise(cfg.noise_rows, rng) if cfg.noise_rows > 0 else None
        t_data = training_clock() - t0
        lr = get_lr(state.step, replace(cfg, steps=state.planned_steps))
        for group in optimizer.param_groups:
            group["lr"] = lr
        state.loss = train_step(model, optimizer, clean, replica, cfg, generator, noise)
        state.step += 1
        _update_timing(state, training_clock() - t0, t_data)
        state.elapsed_s = trained_before + training_clock() - trained_start
        session.update(last_step=state.step, wall_s=round(time.time() - session_start, 3))
        if state.step % cfg.log_every == 0:
            _replan(state, cfg)
            report(_progress("step", state, cfg, lr=lr))
            _append_log(state_path.parent, state, lr)
        if time.time() - last_save >= cfg.checkpoint_every_s:
            _save_state(state_path, model, optimizer, state, rng, generator, cfg)
            last_save = time.time()
            report(_progress("checkpoint", state, cfg, lr=lr))
    if session["last_step"] == session["first_step"]:
        state.sessions.remove(session)  # rerunning a finished run trains nothing: no session
    _save_state(state_path, model, optimizer, state, rng, generator, cfg)
    report(_progress("done", state, cfg))


def training_clock() -> float:
    """Seconds the training loop's thread has run on a CPU: the budget's clock. On a machine
    shared with other jobs the wall clock ran 6x faster than the training (2.4 -> 14.5 s a
    step with a harness and test suites beside it), so a wall-clock budget shrank the schedule
    and spent the run's minutes on other people's work. Alone, this clock keeps pace with the
    wall (torch's intra-op work and the data pipeline run on this thread or beside it)."""
    return time.thread_time()


def _finished(state: RunState) -> bool:
    if state.step >= state.planned_steps:
        return True
    return state.budget_s > 0 and state.elapsed_s >= state.budget_s - EXPORT_MARGIN_S


def _start_session(state: RunState) -> dict:
    """Append this session to the run's history and return its (live) record."""
    session = {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "hardware": _hardware(), "first_step": state.step, "last_step": state.step,
               "wall_s": 0.0}  # fmt: skip
    state.sessions.append(session)
    return session


def _update_timing(state: RunState, step_s: float, data_s: float) -> None:
    if state.s_per_step == 0.0:
        state.s_per_step, state.data_s_per_step = step_s, data_s
        return
    state.s_per_step = TIMING_EMA * state.s_per_step + (1 - TIMING_EMA) * step_s
    state.data_s_per_step = TIMING_EMA * state.data_s_per_step + (1 - TIMING_EMA) * data_s


def _replan(state: RunState, cfg: TrainConfig) -> None:
    """Fit the schedule into the time budget from the measured speed (only with max_minutes)."""
    if state.budget_s <= 0 or state.s_per_step <= 0:
        return
    left_s = max(0.0, state.budget_s - EXPORT_MARGIN_S - state.elapsed_s)
    state.planned_steps = max(state.step + 1, state.step + int(left_s / state.s_per_step))
    state.planned_steps = max(state.planned_steps, cfg.warmup_steps + 1)


def _progress(kind: str, state: RunState, cfg: TrainConfig, lr: float = 0.0) -> Progress:
    eta = max(0, state.planned_steps - state.step) * state.s_per_step
    return Progress(kind, state.step, state.planned_steps, state.loss, lr or cfg.lr,
                    state.s_per_step, state.data_s_per_step, eta, state.elapsed_s)  # fmt: skip


def _append_log(out_dir: Path, state: RunState, lr: float) -> None:
    record = {"step": state.step, "steps": state.planned_steps, "loss": state.loss, "lr": lr,
              "s_per_step": state.s_per_step, "elapsed_s": state.elapsed_s}  # fmt: skip
    with open(out_dir / "log.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")


def _save_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: RunState,
    rng: np.random.Generator,
    generator: torch.Generator,
    cfg: TrainConfig,
) -> None:
    """Atomic write of everything a resume needs (loadable with weights_only=True)."""
    payload = {
        "config": cfg.to_dict(),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "run": vars(state),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": generator.get_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_state(
    path: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    generator: torch.Generator,
) -> RunState:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
    except (RuntimeError, KeyError, ValueError, OSError) as e:
        raise RuntimeError(f"{path}: cannot resume this run ({str(e)[:200]})") from e
    rng.bit_generator.state = json.loads(payload["numpy_rng"])
    generator.set_state(payload["torch_rng"])
    run = dict(payload["run"])
    run.pop("deadline", None)  # states written before budgets counted training time
    return RunState(**run)


def _load_weights(path: str, model: torch.nn.Module, cfg: TrainConfig) -> None:
    """Start from the weights of an engine checkpoint (training.warm_start)."""
    ckpt = load_torch(path)
    load_initial_weights(ckpt.model, ckpt.config, model, cfg.encoder_config(), path)


def _export(cfg: TrainConfig, model: torch.nn.Module, state: RunState) -> Path:
    """Write model.pt (an engine checkpoint) with the run's facts; copy it to cfg.export."""
    model.eval()
    facts = {
        "config": cfg.to_dict(),
        "steps": state.step,
        "batch_size": cfg.batch_size,
        "pairs_per_batch": cfg.batch_size // 2,
        "final_loss": state.loss,
        "wall_time_s": round(sum(x["wall_s"] for x in state.sessions), 1),
        "training_time_s": round(state.elapsed_s, 1),  # the budget's clock, training_clock
        "s_per_step": round(state.s_per_step, 4),
        "data_s_per_step": round(state.data_s_per_step, 4),
        "hardware": _hardware(),
        "parameters": count_parameters(model),
        "data_hours": state.data_hours,
        "sessions": state.sessions,
        "complete": state.step >= state.planned_steps,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = Path(cfg.out_dir) / "model.pt"
    save_checkpoint(path, model, cfg.encoder_config(), training=facts)
    if cfg.export:
        Path(cfg.export).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, cfg.export)
    return path


def _hardware() -> str:
    return f"{cpu_model()}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"


def _data_hours(cfg: TrainConfig) -> dict[str, float]:
    try:
        return {k: round(v, 3) for k, v in hours_per_split(load_manifest(cfg.corpus)).items()}
    except FileNotFoundError:
        return {}
