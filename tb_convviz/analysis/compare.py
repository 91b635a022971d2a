"""Pure functions comparing one layer's filters between two (run, step) snapshots."""
from __future__ import annotations

import numpy as np


def weight_drift(a: np.ndarray, b: np.ndarray) -> dict[str, np.ndarray]:
    """Per-filter cosine distance (0 same direction … 2 flipped) and relative norm change a→b."""
    fa = a.reshape(a.shape[0], -1).astype(np.float64)
    fb = b.reshape(b.shape[0], -1).astype(np.float64)
    na, nb = np.linalg.norm(fa, axis=1), np.linalg.norm(fb, axis=1)
    denom = na * nb
    safe = np.where(denom > 0, denom, 1.0)
    cos = np.where(denom > 0, (fa * fb).sum(axis=1) / safe, (na == nb).astype(np.float64))
    rel = np.where(na > 0, (nb - na) / np.where(na > 0, na, 1.0), (nb > 0).astype(np.float64))
    return {"cosine_distance": np.clip(1 - cos, 0, 2), "norm_change": rel}


def most_changed_first(score: np.ndarray) -> np.ndarray:
    """Filter indices sorted by descending score, NaNs last, ties by index."""
    key = np.where(np.isnan(score), -np.inf, score)
    return np.lexsort((np.arange(score.shape[0]), -key))
