"""Random fingerprints for the index and search tests."""

from __future__ import annotations

import numpy as np


def unit_vectors(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)
