"""The numeric path an encoder runs on, and what every backend's encoder is.

Either backend runs float32 unless a faster path is proven right on this machine by the probe
(engine.model.probe): bfloat16 on torch, an export's int8 twin on ONNX Runtime.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import numpy as np

from engine.core.errors import NfpError

if TYPE_CHECKING:
    from engine.model.verified import Stamp

PRECISION_ENV = "NFP_PRECISION"  # float32 | bfloat16 | int8 | auto (the default)
PRECISIONS = ("auto", "float32", "bfloat16", "int8")


@dataclass(frozen=True)
class Precision:
    """The numeric path an encoder runs on this machine, and why."""

    requested: str  # auto | float32 | bfloat16 | int8
    chosen: str  # float32 | bfloat16 (torch) | int8 (ONNX Runtime)
    reason: str  # one sentence for `nfp info` and the self-test

    def to_json(self) -> dict:
        return {"requested": self.requested, "chosen": self.chosen, "reason": self.reason}


class Encoder(Protocol):
    """A backend's inference: log-mel float32 (n, 1, N_MELS, N_FRAMES) → fingerprints float32
    (n, d), thread-safe."""

    precision: Precision
    # The stamp of a reference check passed by the model that runs now (engine.model.verified);
    # None where none is kept (torch).
    reference_stamp: Stamp | None

    def __call__(self, mel: np.ndarray) -> np.ndarray: ...


def requested_precision(value: str | None = None) -> str:
    """The precision asked for: `value`, else $NFP_PRECISION, else auto."""
    value = (value or os.environ.get(PRECISION_ENV) or "auto").strip().lower()
    if value not in PRECISIONS:
        raise NfpError(f"{PRECISION_ENV}={value!r}: expected one of {', '.join(PRECISIONS)}")
    return value
