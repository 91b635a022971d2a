"""Pure functions placing a layer's filters on a 2-D map by what they respond to, and keeping
successive epochs' maps in register so that a filter's move means a change, not a re-projection.

Input is a (F, N) response profile (`similarity.response_profile`): one row per filter, its mean
activation on each of N probe images. PCA is built in; UMAP and t-SNE come with the `[embed]` extra.
"""
from __future__ import annotations

import importlib.util
from typing import Sequence

import numpy as np

from tb_convviz.model.notices import notice

METHODS = ("pca", "umap", "tsne")
# Fewer filters than this leave t-SNE/UMAP no neighbourhoods to preserve: PCA is used instead.
_MIN_NONLINEAR_FILTERS = 5


def _pca(profile: np.ndarray) -> np.ndarray:
    """Scores on the first two principal components (F, 2), zero-padded when the rank is lower.
    Each axis is oriented so its largest-magnitude score is positive: the same data gives the
    same picture, not a mirrored one."""
    if profile.shape[0] == 0:
        return np.zeros((0, 2))
    x = profile - profile.mean(axis=0, keepdims=True)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    scores = np.zeros((x.shape[0], 2))
    k = min(2, s.shape[0])
    scores[:, :k] = u[:, :k] * s[:k]
    extreme = scores[np.abs(scores).argmax(axis=0), np.arange(2)]
    return scores * np.where(extreme < 0, -1.0, 1.0)


# The module each method needs beyond numpy (None: built in).
_METHOD_MODULES = {"pca": None, "umap": "umap", "tsne": "sklearn"}


def available_methods() -> tuple[str, ...]:
    """The methods whose package is installed, so the dashboard offers only what works (found,
    not imported: importing UMAP takes seconds)."""
    return tuple(m for m in METHODS if _METHOD_MODULES[m] is None or importlib.util.find_spec(_METHOD_MODULES[m]) is not None)


def axis_variance_share(profile: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(2,) share of the profiles' total variance along each axis of a PCA map (F, 2), also once
    it was rotated and scaled into register with another step: a rotation of the first two
    principal components keeps their summed variance and splits it between the axes as the
    points' own variances split. NaN for profiles that do not vary."""
    x = np.asarray(profile, dtype=np.float64)
    x = x - x.mean(axis=0, keepdims=True)
    total = float((x**2).sum())
    spectrum = np.linalg.svd(x, compute_uv=False) ** 2
    spread = np.asarray(points, dtype=np.float64).var(axis=0)
    if total <= 0 or spread.sum() <= 0:
        return np.full(2, np.nan)
    return spread / spread.sum() * spectrum[:2].sum() / total


def _missing(method: str, package: str) -> ImportError:
    return ImportError(
        f"filter_embedding(method={method!r}) needs {package}, which is not installed: "
        "pip install 'tb_convviz[embed]' (or use method='pca')"
    )


def _tsne(profile: np.ndarray, seed: int) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError as e:
        raise _missing("tsne", "scikit-learn") from e
    # Perplexity must stay below the number of points; F/3 is the usual bound for small sets.
    perplexity = min(30.0, (profile.shape[0] - 1) / 3)
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(profile)


def _umap(profile: np.ndarray, seed: int) -> np.ndarray:
    try:
        import umap
    except ImportError as e:
        raise _missing("umap", "umap-learn") from e
    reducer = umap.UMAP(n_components=2, n_neighbors=min(15, profile.shape[0] - 1), random_state=seed)
    return reducer.fit_transform(profile)


def filter_embedding(profile: np.ndarray, method: str = "pca", seed: int = 0) -> np.ndarray:
    """(F, N) response profiles → (F, 2) float64 map coordinates; filters that respond alike lie close.

    method: "pca" (numpy SVD, linear, exact and deterministic), "umap" (umap-learn) or "tsne"
    (scikit-learn) — the last two keep local neighbourhoods, need the `[embed]` extra, and fall
    back to PCA, with a warning, below 5 filters. `seed` fixes their random initialisation.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    x = np.asarray(profile, dtype=np.float64)
    if method != "pca" and x.shape[0] < _MIN_NONLINEAR_FILTERS:
        notice(f"{x.shape[0]} filters are too few for {method}: using PCA")
        method = "pca"
    if method == "pca":
        return _pca(x)
    embed = _tsne if method == "tsne" else _umap
    return np.asarray(embed(x, seed), dtype=np.float64)


def align_embeddings(prev: np.ndarray, cur: np.ndarray, scale: bool = True) -> np.ndarray:
    """`cur` (F, 2) moved onto `prev` (F, 2) — row i is filter i in both — by the translation,
    rotation or reflection, and (if `scale`) isotropic scale that best fit it in least squares
    (orthogonal Procrustes). A map that differs from the last only by how the method happened to
    orient it comes back equal to it, so successive epochs do not jump."""
    p = np.asarray(prev, dtype=np.float64)
    c = np.asarray(cur, dtype=np.float64)
    if p.shape != c.shape:
        raise ValueError(f"maps of different filters: {p.shape} vs {c.shape}")
    p_mean, c_mean = p.mean(axis=0), c.mean(axis=0)
    pc, cc = p - p_mean, c - c_mean
    u, s, vt = np.linalg.svd(cc.T @ pc)
    rotation = u @ vt
    spread = float((cc**2).sum())
    factor = s.sum() / spread if scale and spread > 0 else 1.0
    return factor * cc @ rotation + p_mean


def embedding_trail(embeddings: Sequence[np.ndarray], scale: bool = True) -> np.ndarray:
    """Epoch-by-epoch maps [(F, 2), …] → (T, F, 2), each aligned to the one before it as aligned
    (the first stays as it is), so a filter's path across epochs shows only real moves."""
    if not len(embeddings):
        raise ValueError("embedding_trail needs at least one map")
    trail = [np.asarray(embeddings[0], dtype=np.float64)]
    for cur in embeddings[1:]:
        trail.append(align_embeddings(trail[-1], cur, scale))
    return np.stack(trail)
