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
    Greedy order is reached in vectorized rounds: every mutually-best pair of the remaining
    filters is one greedy would take (no larger entry shares its row or column).
    """
    sim = np.abs(_unit_rows(a) @ _unit_rows(b).T)
    n = sim.shape[0]
    match = np.full(n, -1, dtype=np.int64)
    rows = np.arange(n)
    cols = np.arange(sim.shape[1])
    while rows.size and cols.size:
        sub = sim[np.ix_(rows, cols)]
        best_col = sub.argmax(axis=1)
        best_row = sub.argmax(axis=0)
        mutual = best_row[best_col] == np.arange(rows.size)
        match[rows[mutual]] = cols[best_col[mutual]]
        keep_cols = np.ones(cols.size, bool)
        keep_cols[best_col[mutual]] = False
        rows, cols = rows[~mutual], cols[keep_cols]
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
