"""A run's first weights from an engine checkpoint (TrainConfig.init): the same encoder's weights
as they are, or scnn's narrowed into scnn_lite, whose first block has half the channels.

Narrowing keeps, at each of the first block's two layers, the channels that carry the most into
the next layer (the layer norm's gain on a channel times the norm of the next convolution's
weights reading it) and drops the rest; every later layer is copied. The layer norms then
average over fewer channels, so the narrowed network is close to its source, not equal to it:
training goes on from there.
"""

from __future__ import annotations

import torch
from torch import nn

from engine.model.encoder_config import EncoderConfig

# (source encoder, run's encoder) pairs a run may start from; the rest of the config must agree.
NARROWABLE = {("scnn", "scnn_lite")}


def load_initial_weights(source: nn.Module, source_config: EncoderConfig,
                         model: nn.Module, config: EncoderConfig, path: str) -> None:  # fmt: skip
    """Fill `model` (built from `config`) with the weights of `source` (from `source_config`,
    read from `path`); ValueError naming the file where one cannot start the other."""
    if source_config == config:
        model.load_state_dict(source.state_dict())
        return
    narrows = (source_config.name, config.name) in NARROWABLE
    if not (narrows and _same_but_name(source_config, config)):
        raise ValueError(f"{path}: its encoder {source_config} is not this run's {config}")
    model.load_state_dict(narrowed_state(source, model))


def _same_but_name(a: EncoderConfig, b: EncoderConfig) -> bool:
    return (a.d, a.width, a.projection) == (b.d, b.width, b.projection)


def narrowed_state(source: nn.Module, target: nn.Module) -> dict[str, torch.Tensor]:
    """target's state dict from an SCNN source whose first block is wider: that block's kept
    channels (strongest first-layer outputs, then strongest second-layer outputs) and the
    second block's inputs reading them; every other tensor as the source has it."""
    src = {k: v.detach().clone() for k, v in source.state_dict().items()}
    first, second = target.front[0], "front.1."
    kept_t = _strongest(src, "front.0.norm_t", src["front.0.conv_f.weight"], first.conv_t)
    kept_f = _strongest(src, "front.0.norm_f", src[second + "conv_t.weight"], first.conv_f)
    for name in ("conv_t.weight", "conv_t.bias", "norm_t.norm.weight", "norm_t.norm.bias"):
        src["front.0." + name] = src["front.0." + name][kept_t]
    for name in ("conv_f.bias", "norm_f.norm.weight", "norm_f.norm.bias"):
        src["front.0." + name] = src["front.0." + name][kept_f]
    src["front.0.conv_f.weight"] = src["front.0.conv_f.weight"][kept_f][:, kept_t]
    src[second + "conv_t.weight"] = src[second + "conv_t.weight"][:, kept_f]
    return src


def _strongest(
    src: dict[str, torch.Tensor], norm: str, reader: torch.Tensor, layer: nn.Conv2d
) -> torch.Tensor:
    """Indices (ascending) of the layer.out_channels channels of the source's layer whose
    layer-norm gain times the norm of the weights reading them (reader (out, in, kh, kw)) is
    largest."""
    strength = src[norm + ".norm.weight"].abs() * reader.flatten(2).norm(dim=(0, 2))
    return strength.topk(layer.out_channels).indices.sort().values
