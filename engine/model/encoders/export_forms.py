"""What the networks compute, written for their ONNX export: the same values as torch's eager
operators, in operators ONNX Runtime's CPU provider runs faster (engine.model.export).

Measured on ONNX Runtime 1.32, one core of a 2-core AMD EPYC (AVX-512), on a batch of 8×32×256×16
(the first block's activations): its Elu took 1.95 ms, where Clip, Exp, Sub and Max took 0.6 ms
together, and the channel layer norm below runs 4 full passes over the tensor instead of 7. The
shipped d = 128 export went from 13.2 to 8.7 ms of CPU per 8 segments (docs/performance.md).
Training never runs these: the eager operators are faster on torch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def elu(x: torch.Tensor) -> torch.Tensor:
    """F.elu (alpha 1); in an export, elu_by_exp."""
    return elu_by_exp(x) if torch.onnx.is_in_onnx_export() else F.elu(x)


def elu_by_exp(x: torch.Tensor) -> torch.Tensor:
    """ELU as max(x, exp(min(x, 0)) − 1): ONNX Runtime's Elu is computed without vector
    instructions, its Exp with them. The two agree because exp(x) − 1 ≥ x everywhere, with
    equality at 0 only (to the float32 rounding of exp(x) − 1, which Elu has too)."""
    return torch.maximum(x, torch.exp(torch.clamp(x, max=0.0)) - 1.0)


def channel_layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float
) -> torch.Tensor:
    """LayerNorm over axis 1 of float32 (B, C, H, W) with weight and bias (C,): the values of
    nn.LayerNorm(C) applied to x.permute(0, 2, 3, 1), computed in place on axis 1.

    Two passes for the statistics (the mean, then the mean of the centred squares, as torch
    computes them: no cancellation), the square as a product (ONNX Runtime's Pow is slower),
    and the affine as one BatchNormalization of mean 0 and variance 1 (one pass, where a
    broadcast Mul and an Add were two). An ONNX LayerNormalization would need the channels
    last: with the transposes folded into ONNX Runtime's blocked convolutions it ran as fast
    as this form, not faster."""
    mean = x.mean(1, keepdim=True)
    centred = x - mean
    variance = (centred * centred).mean(1, keepdim=True)
    normalised = centred * torch.rsqrt(variance + eps)
    zeros = torch.zeros_like(weight)
    ones = torch.ones_like(weight)
    return F.batch_norm(normalised, zeros, ones, weight, bias, training=False, eps=0.0)
