"""Encoders: log-mel (B, 1, 256, 32) → L2-normalised fingerprints (B, d), chosen by name."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from engine.model.encoder_config import EncoderConfig
from engine.model.encoders.attention import Attended
from engine.model.encoders.fc import FC
from engine.model.encoders.lstm import LSTM
from engine.model.encoders.resnet import ResNet
from engine.model.encoders.scnn import LITE_FIRST_BLOCK_SHARE, SCNN

__all__ = ["ENCODERS", "EncoderConfig", "build_encoder", "count_parameters", "register_encoder"]


# The seed's separable CNN and the KAIST report's family; "attn_" puts temporal–spectral
# attention in front of the encoder; scnn_lite is scnn with a narrower first block.
ENCODERS: dict[str, Callable[[EncoderConfig], nn.Module]] = {
    "scnn": lambda c: SCNN(c.d, c.width, c.projection),
    "scnn_lite": lambda c: SCNN(c.d, c.width, c.projection, LITE_FIRST_BLOCK_SHARE),
    "fc": lambda c: FC(c.d, c.width, c.projection),
    "lstm": lambda c: LSTM(c.d, c.width, c.projection),
    "attn_lstm": lambda c: Attended(LSTM(c.d, c.width, c.projection)),
    "attn_scnn": lambda c: Attended(SCNN(c.d, c.width, c.projection)),
    "attn_resnet": lambda c: Attended(ResNet(c.d, c.width, c.projection)),
}


def register_encoder(name: str, factory: Callable[[EncoderConfig], nn.Module]) -> None:
    """Add an encoder family (a plug-in, or a test's stand-in) under a name checkpoints can use."""
    ENCODERS[name] = factory


def build_encoder(config: EncoderConfig) -> nn.Module:
    if config.name not in ENCODERS:
        raise ValueError(f"unknown encoder {config.name!r}; choose from {sorted(ENCODERS)}")
    return ENCODERS[config.name](config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
