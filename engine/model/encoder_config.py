"""What names an encoder and its size: the part of a checkpoint that needs no torch to read."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class EncoderConfig:
    """Everything needed to rebuild an encoder; stored inside every checkpoint."""

    name: str = "scnn"  # a key of engine.model.encoders.ENCODERS
    d: int = 128  # fingerprint dimension
    width: float = 1.0  # channel multiplier; 1.0 is the paper's size
    projection: str = "divenc"  # "divenc" (the seed's divide-and-encode) or "fc"

    def to_dict(self) -> dict:
        return asdict(self)
