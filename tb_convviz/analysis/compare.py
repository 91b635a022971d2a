"""Pure functions comparing one layer's filters between two (run, step) snapshots."""
from __future__ import annotations

import numpy as np


def _unit_rows(w: np.ndarray) -> np.ndarray:
    flat = w.reshape(w.shape[0], -1).astype(np.float64)
    norms = np.linalg.norm(flat, axis=1, keepdims=True)
    return flat / np.where(norms > 0, norms, 1.0)


def match_filters(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For each filter of `a`, the index of its counterpart in `b` (a permutation).

    Independently trained runs learn similar filters in different slots, so run-vs-run
    comparison pairs them greedily by |cosine similarity| (sign-agnostic: a negated
    filter is the same detector for the layers after it), most similar pairs first.
    """
    sim = np.abs(_unit_rows(a) @ _unit_rows(b).T)
    n = sim.shape[0]
    match = np.full(n, -1, dtype=np.int64)
    used_a = np.zeros(n, bool)
    used_b = np.zeros(sim.shape[1], bool)
    for flat_index in np.argsort(-sim, axis=None, kind="stable"):
        i, j = divmod(int(flat_index), sim.shape[1])
        if not used_a[i] and not used_b[j]:
            match[i], used_a[i], used_b[j] = j, True, True
            if used_a.all():
                break
    return match


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
