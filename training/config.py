"""Training defaults in one visible block, one comment per value (nanoGPT style).

A run is fully described by a TrainConfig; it is saved inside every checkpoint the run writes, and
any field can be overridden from the command line (`nfp train run --set lr=3e-4 --set d=64`) or
from a JSON file (`--config run.json`).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from engine.model.encoders import EncoderConfig
from training.degrade import DegradeParams


@dataclass(frozen=True)
class TrainConfig:
    # --- encoder (travels into the checkpoint as an EncoderConfig) ---
    encoder: str = "scnn"  # a key of engine.model.encoders.ENCODERS
    d: int = 128  # fingerprint dimension
    width: float = 0.25  # channel multiplier: 0.25 trains on a 2-core CPU in about an hour
    projection: str = "divenc"  # "divenc" (the seed's divide-and-encode) or "fc"
    # --- data ---
    corpus: str = "corpus"  # folder made by `nfp train corpus` (manifest.json + audio/*.npy)
    bank: str = "corpus/degradations.npz"  # degradation sources made by `nfp train noise`
    batch_size: int = 256  # N: N/2 clean segments + N/2 degraded replicas
    offset_s: float = 0.2  # replicas are cut up to ± this far from the clean segment
    context_s: float = 0.5  # audio before a replica that feeds its reverb / echo tail
    min_rms: float = 1e-3  # clean segments quieter than this (silence) are drawn again
    init: str = ""  # start from this .pt checkpoint's weights (optimiser and schedule afresh)
    # --- degradations of the replicas (ranges drawn per example) ---
    snr_db: tuple[float, float] = (0.0, 10.0)  # background noise level
    noise_probs: tuple[float, float, float] = (0.5, 0.25, 0.25)  # background, babble, synthetic
    ir_prob: float = 0.8  # share played through a simulated room
    echo_prob: float = 0.2  # share with one discrete echo
    band_prob: float = 0.7  # share through a band-limited device
    speaker_prob: float = 0.0  # share also played through a second device (a loudspeaker)
    high_pass_prob: float = 0.0  # share through a recorder's rumble filter (20-150 Hz)
    clip_prob: float = 0.0  # share turned up to clipping (0-12 dB over full scale)
    lead_prob: float = 0.0  # share whose start (up to 30 %) holds only the noise: an early start
    mp3_prob: float = 0.0  # share sent on as a low-bitrate MP3 (32-64 kbit/s), as phones do
    speed_prob: float = 0.0  # share played faster or slower (tempo and pitch together)
    speed_max: float = 0.05  # largest speed change: ±5 %, a broadcast's or a DJ's edit
    # --- SpecAugment on the replicas' log-mel (after the waveform degradations) ---
    cutout_prob: float = 0.5  # share of replicas with one blanked time-frequency rectangle
    cutout_max_frac: float = 0.5  # largest rectangle side, as a fraction of the image side
    freq_masks: int = 2  # frequency bands blanked per replica
    freq_mask_max: int = 24  # widest band, in mel bins (of 256)
    # --- loss and optimisation ---
    loss: str = "ntxent"  # "ntxent" (Chang et al.) or "triplet" (semi-hard, FaceNet)
    tau: float = 0.05  # NT-Xent temperature (Chang et al.)
    noise_rows: int = 0  # NT-Xent negatives per batch made of a room's noise alone, no music
    margin: float = 0.4  # triplet margin, in cosine distance (1 - similarity)
    optimizer: str = "adam"  # "adam" for small batches, "lamb" (pytorch_optimizer) for large ones
    lr: float = 1e-3  # peak learning rate
    min_lr: float = 1e-5  # floor reached at the end of the cosine decay
    warmup_steps: int = 50  # linear warm-up
    weight_decay: float = 0.0  # decoupled for lamb; plain L2 for adam
    steps: int = 5000  # schedule length (re-planned from measured speed when max_minutes > 0)
    max_minutes: float = 0.0  # training-time budget of the whole run; > 0 fits the schedule into it
    session_minutes: float = 0.0  # > 0: this session stops after so long; rerun to continue
    # --- run bookkeeping ---
    out_dir: str = "runs/scnn-d128"  # state.pt (resumable), model.pt (exported), log.jsonl
    export: str = ""  # also copy the final model here (e.g. engine/checkpoints/nfp-scnn-d128.pt)
    seed: int = 0  # numpy and torch seeds; the run is reproducible for a seed and thread count
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    checkpoint_every_s: float = 180.0  # resumable state is written this often (and at the end)
    log_every: int = 10  # steps between progress callbacks

    def encoder_config(self) -> EncoderConfig:
        return EncoderConfig(name=self.encoder, d=self.d, width=self.width,
                             projection=self.projection)  # fmt: skip

    def degrade_params(self) -> DegradeParams:
        return DegradeParams(snr_db=self.snr_db, noise_probs=self.noise_probs,
                             ir_prob=self.ir_prob, echo_prob=self.echo_prob,
                             band_prob=self.band_prob, speaker_prob=self.speaker_prob,
                             high_pass_prob=self.high_pass_prob,
                             clip_prob=self.clip_prob, lead_prob=self.lead_prob,
                             mp3_prob=self.mp3_prob)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_from_dict(values: dict[str, Any], base: TrainConfig | None = None) -> TrainConfig:
    """Override fields of base (default: the defaults) from a dict; unknown keys are an error."""
    base = base or TrainConfig()
    types = {f.name: f.type for f in fields(TrainConfig)}
    unknown = sorted(set(values) - set(types))
    if unknown:
        raise ValueError(f"unknown training config fields: {', '.join(unknown)}")
    converted = {k: _convert(k, v, getattr(base, k)) for k, v in values.items()}
    return replace(base, **converted)


def _convert(name: str, value: Any, default: Any) -> Any:
    """Coerce a JSON or command-line value to the type of the field's default."""
    try:
        if isinstance(default, tuple):
            items = value.split(",") if isinstance(value, str) else value
            return tuple(float(x) for x in items)
        if isinstance(default, bool):
            return value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
        return type(default)(value)
    except (TypeError, ValueError) as e:
        raise ValueError(f"training config field {name}: cannot use {value!r} ({e})") from e


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """TrainConfig from an optional JSON file, then `key=value` overrides."""
    cfg = TrainConfig()
    if path:
        path = Path(path)
        try:
            cfg = config_from_dict(json.loads(path.read_text()), cfg)
        except (OSError, json.JSONDecodeError) as e:
            raise ValueError(f"{path}: cannot read training config ({e})") from e
    pairs = {}
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} is not of the form key=value")
        pairs[key.strip()] = value.strip()
    return config_from_dict(pairs, cfg)
