"""Pure functions comparing representations across runs and epochs the way the literature does:
linear CKA (Kornblith et al. 2019) between layers, and one-to-one filter matching by response
profiles (Li et al. 2016, "Convergent learning"), with weight drift measured after alignment.

Everything is computed over one fixed set of probe images, so two snapshots are comparable
exactly when they saw the same probe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from scipy import stats
from scipy.optimize import linear_sum_assignment

from tb_convviz.analysis.compare import weight_drift

Array = Union[np.ndarray, torch.Tensor]

# The per-filter flag `aligned_weight_drift` adds to `compare.weight_drift`'s keys.
SIGN_FLIPPED = "sign_flipped"

# Filters flattened into the float64 Gram at once: bounds the temporary copy to about
# N × 64 × H × W doubles (64 probe images of a 256×56×56 ResNet-50 layer would otherwise be 411 MB).
_GRAM_FILTER_CHUNK = 64


def _as_numpy(a: Array) -> np.ndarray:
    return a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)


def gram_matrix(acts: Array) -> np.ndarray:
    """(N, F, *spatial) activations of N probe images → their (N, N) float64 linear Gram matrix.

    Each image's representation is its whole activation (all filters at full resolution),
    flattened; the Gram sums over those features, so it does not depend on filter order.
    Features are centered over the probe images first: linear CKA needs the centered Gram
    H K H, and centering before the product avoids the cancellation of subtracting large means
    from it afterwards (`linear_cka` centers again, which leaves a centered Gram unchanged).
    """
    x = _as_numpy(acts)
    n, filters = x.shape[0], x.shape[1]
    gram = np.zeros((n, n), dtype=np.float64)
    for start in range(0, filters, _GRAM_FILTER_CHUNK):
        chunk = x[:, start : start + _GRAM_FILTER_CHUNK].reshape(n, -1).astype(np.float64)
        chunk -= chunk.mean(axis=0, keepdims=True)
        gram += chunk @ chunk.T
    return gram


def _centered_unit(gram: np.ndarray) -> np.ndarray:
    """H K H scaled to unit Frobenius norm (all zeros for a representation constant over the probe)."""
    k = np.asarray(gram, dtype=np.float64)
    k = k - k.mean(axis=0, keepdims=True)
    k = k - k.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(k)
    return k / norm if norm > 0 else np.zeros_like(k)


def linear_cka(gram_a: np.ndarray, gram_b: np.ndarray) -> float:
    """Linear CKA of two representations of the same N probe images, from their (N, N) Grams.

    CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with HSIC(K, L) ∝ tr(K_c L_c), K_c = H K H;
    the 1/(N−1)² factors cancel. 1 for representations equal up to rotation and isotropic
    scale (so for a filter permutation), lower the more they differ. NaN when either
    representation is constant over the probe (its centered Gram is 0: nothing to compare).
    """
    return float(cka_matrix([gram_a], [gram_b])[0, 0])


def cka_matrix(grams_a: Sequence[np.ndarray], grams_b: Optional[Sequence[np.ndarray]] = None) -> np.ndarray:
    """Linear CKA between every pair of (N, N) Grams: (len(a), len(b)), or (len(a), len(a))
    when `grams_b` is None — e.g. one layer across epochs, or every layer of run A against
    every layer of run B. Each Gram is centered and normalised once, so T epochs cost T² dot products."""
    unit_a = np.stack([_centered_unit(g).ravel() for g in grams_a])
    unit_b = unit_a if grams_b is None else np.stack([_centered_unit(g).ravel() for g in grams_b])
    cka = unit_a @ unit_b.T
    constant = (np.abs(unit_a).sum(axis=1) == 0)[:, None] | (np.abs(unit_b).sum(axis=1) == 0)[None, :]
    return np.where(constant, np.nan, np.clip(cka, -1.0, 1.0))


# Unbiased HSIC divides by N(N − 3), and its jackknife drops one image: below this, no interval.
MIN_CKA_IMAGES = 4
CKA_LEVEL = 0.95


@dataclass(frozen=True)
class CkaEstimate:
    """Debiased CKA between two stacks of Grams, each array (len(a), len(b)): `value`, and the
    `lo`–`hi` interval at `CKA_LEVEL` (NaN where the images are too few or a side is constant)."""

    value: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    images: int


def _zero_diagonal(grams: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g, N, N) Grams with their diagonals zeroed, their row sums (g, N) and totals (g,): the
    pieces every unbiased-HSIC term is made of."""
    k = np.stack([np.asarray(g, dtype=np.float64) for g in grams]).copy()
    n = k.shape[-1]
    k[:, np.arange(n), np.arange(n)] = 0.0
    rows = k.sum(axis=2)
    return k, rows, rows.sum(axis=1)


def _hsic_u(trace: np.ndarray, total_k: np.ndarray, total_l: np.ndarray, rows_dot: np.ndarray, n: int) -> np.ndarray:
    """Song et al. (2012)'s unbiased HSIC from tr(K̃L̃), 1ᵀK̃1, 1ᵀL̃1 and 1ᵀK̃L̃1 of N images."""
    return (trace + total_k * total_l / ((n - 1) * (n - 2)) - 2.0 * rows_dot / (n - 2)) / (n * (n - 3))


def _hsic_terms(a: tuple, b: tuple, outer: bool, jackknife: bool) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Unbiased HSIC of every pair (a, b) when `outer`, else of a[i] with b[i]; and with
    `jackknife`, the same with each image left out in turn (last axis N), from closed forms: each
    leave-one-out term is the full term less the left-out image's row, so no Gram is rebuilt."""
    (ka, ra, sa), (kb, rb, sb) = a, b
    n = ka.shape[-1]
    if outer:
        trace = ka.reshape(len(ka), -1) @ kb.reshape(len(kb), -1).T
        rows_dot, totals = ra @ rb.T, (sa[:, None], sb[None, :])
    else:
        trace = np.einsum("gij,gij->g", ka, kb)
        rows_dot, totals = np.einsum("gi,gi->g", ra, rb), (sa, sb)
    full = _hsic_u(trace, *totals, rows_dot, n)
    if not jackknife:
        return full, None
    if outer:
        # row_products[a, b, m] = Σ_j K_a[m, j] L_b[m, j]; l_rows_k[a, b, m] = (L_b r_a)[m]
        row_products = np.matmul(ka.transpose(1, 0, 2), kb.transpose(1, 2, 0)).transpose(1, 2, 0)
        l_rows_k = (kb.reshape(-1, n) @ ra.T).reshape(len(kb), n, len(ka)).transpose(2, 0, 1)
        k_rows_l = (ka.reshape(-1, n) @ rb.T).reshape(len(ka), n, len(kb)).transpose(0, 2, 1)
        row_a, row_b = ra[:, None, :], rb[None, :, :]
        sa_, sb_ = sa[:, None, None], sb[None, :, None]
    else:
        row_products = np.einsum("gmj,gmj->gm", ka, kb)
        l_rows_k = np.einsum("gmj,gj->gm", kb, ra)
        k_rows_l = np.einsum("gmj,gj->gm", ka, rb)
        row_a, row_b = ra, rb
        sa_, sb_ = sa[:, None], sb[:, None]
    left_out = _hsic_u(
        trace[..., None] - 2.0 * row_products,
        sa_ - 2.0 * row_a,
        sb_ - 2.0 * row_b,
        rows_dot[..., None] - l_rows_k - k_rows_l + row_products - row_a * row_b,
        n - 1,
    )
    return full, left_out


def _ratio(cross: np.ndarray, self_a: np.ndarray, self_b: np.ndarray) -> np.ndarray:
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)); NaN where a self-term is not positive (a constant
    representation, or so few images that the unbiased estimate of its spread is ≤ 0)."""
    denominator = self_a * self_b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, cross / np.sqrt(np.where(denominator > 0, denominator, 1.0)), np.nan)


def debiased_cka_matrix(grams_a: Sequence[np.ndarray], grams_b: Optional[Sequence[np.ndarray]] = None) -> CkaEstimate:
    """Debiased linear CKA (Kornblith et al. 2019, §A.1: unbiased HSIC of Song et al. 2012) between
    every pair of (N, N) Grams over the same N images, with a 95% jackknife interval.

    Linear CKA from few images of many features is biased upwards (unrelated layers read 0.9 on
    16 images); the unbiased HSIC removes that bias, so unrelated representations read ≈ 0.
    The value can fall slightly below 0 or above 1 by chance; it is 1 for two Grams equal up to
    scale. Feature centring leaves unbiased HSIC unchanged (its terms are differences of pairs),
    so the stored centred Grams serve, and so does any subset of their images.

    Interval: delete-one jackknife over probe images. CKA is a smooth function of U-statistics in
    the images, for which the jackknife variance is consistent (Arvesen 1969); leaving an image out
    is exact on the stored Gram (drop its row and column), unlike a bootstrap, whose repeated
    images would put diagonal (self-similarity) terms into the off-diagonal sums the estimator
    relies on. The interval is value ± t(N − 1) · jackknife SE.
    """
    a = _zero_diagonal(grams_a)
    b = a if grams_b is None else _zero_diagonal(grams_b)
    n = a[0].shape[-1]
    if b[0].shape[-1] != n:
        raise ValueError(f"Grams over different numbers of images: {n} and {b[0].shape[-1]}")
    shape = (len(a[0]), len(b[0]))
    if n < MIN_CKA_IMAGES:
        nan = np.full(shape, np.nan)
        return CkaEstimate(nan, nan, nan, n)
    jackknife = n > MIN_CKA_IMAGES
    cross, cross_out = _hsic_terms(a, b, outer=True, jackknife=jackknife)
    self_a, self_a_out = _hsic_terms(a, a, outer=False, jackknife=jackknife)
    self_b, self_b_out = (self_a, self_a_out) if grams_b is None else _hsic_terms(b, b, outer=False, jackknife=jackknife)
    value = _ratio(cross, self_a[:, None], self_b[None, :])
    if not jackknife:
        nan = np.full(shape, np.nan)
        return CkaEstimate(value, nan, nan, n)
    left_out = _ratio(cross_out, self_a_out[:, None, :], self_b_out[None, :, :])
    spread = np.sqrt((n - 1) / n * ((left_out - left_out.mean(axis=-1, keepdims=True)) ** 2).sum(axis=-1))
    half = stats.t.ppf(0.5 + CKA_LEVEL / 2, n - 1) * spread
    return CkaEstimate(value, value - half, value + half, n)


def response_profile(acts: Array) -> np.ndarray:
    """(N, F, *spatial) activations → (F, N) float64: each filter's mean activation on each probe
    image — what a filter responds to, independent of where in the image and of filter order."""
    x = _as_numpy(acts)
    return x.reshape(x.shape[0], x.shape[1], -1).mean(axis=2, dtype=np.float64).T.copy()


def _unit_rows(rows: np.ndarray, centred: bool) -> np.ndarray:
    """Rows (F, ...) flattened to (F, D) float64, centred if asked, and scaled to unit norm, so a row
    product is a Pearson correlation (centred) or a cosine; a row that is 0 after centring stays 0
    (its correlation is undefined; 0 says "no evidence of a match")."""
    p = np.asarray(rows, dtype=np.float64)
    p = p.reshape(p.shape[0], -1)
    if centred:
        p = p - p.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(p, axis=1, keepdims=True)
    return np.divide(p, norm, out=np.zeros_like(p), where=norm > 0)


def match_filters(a: np.ndarray, b: np.ndarray, *, centred: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pair each filter of A with at most one filter of B, maximising the total |similarity| of their
    rows (optimal, Hungarian assignment).

    a, b: one row per filter, (F_a, ...) and (F_b, ...). Response profiles (F, N) over the same N
    probe images are compared by Pearson correlation (`centred`, the default); kernels
    (F, Cin/groups, *k) by cosine (centred=False: a kernel's mean is part of what it detects).
    Sign-aware: a filter whose response is its counterpart's negation carries the same information
    (one layer later a negative weight undoes it), so pairs are chosen on |similarity|.
    Returns, per filter of A (shape (F_a,)):
      match: index of its partner in B, −1 when F_a > F_b left it unmatched;
      similarity: |similarity| with its partner in [0, 1] (NaN when unmatched);
      sign: +1 / −1 the sign of that similarity (0 when unmatched or the similarity is 0).
    Constant profiles (a dead filter) and zero kernels are similar to nothing (0), so they match
    arbitrarily with similarity 0.
    """
    corr = _unit_rows(a, centred) @ _unit_rows(b, centred).T
    rows, cols = linear_sum_assignment(np.abs(corr), maximize=True)
    f_a = corr.shape[0]
    match = np.full(f_a, -1, dtype=np.int64)
    similarity = np.full(f_a, np.nan)
    sign = np.zeros(f_a, dtype=np.int64)
    match[rows] = cols
    paired = np.clip(corr[rows, cols], -1.0, 1.0)
    similarity[rows] = np.abs(paired)
    sign[rows] = np.sign(paired).astype(np.int64)
    return match, similarity, sign


# Shuffled solves behind a chance level: enough that the medians pool ~256 filters (one draw of a
# 512-filter layer already does; a 16-filter layer takes 16 draws), so a big layer's first answer
# costs about two solves and a small layer's null is not one noisy draw.
_CHANCE_FILTERS = 256
_MAX_SHUFFLES = 16


@dataclass(frozen=True)
class Pairing:
    """An optimal one-to-one pairing of A's filters with B's by response profile (`match_filters`'s
    `match`, `similarity`, `sign`, each (F_a,)) and its `chance`: the median matched similarity
    the same optimal assignment reaches when B's profile images are shuffled (mean over
    `shuffles` draws); `images`: the N the profiles were over."""

    match: np.ndarray
    similarity: np.ndarray
    sign: np.ndarray
    chance: float
    shuffles: int
    images: int

    @property
    def median_similarity(self) -> float:
        found = self.similarity[np.isfinite(self.similarity)]
        return float(np.median(found)) if found.size else float("nan")


def pair_filters(profile_a: np.ndarray, profile_b: np.ndarray, *, seed: int = 0) -> Pairing:
    """Pair the filters of A and B by their (F, N) response profiles over the same N probe images,
    and say what pairing would reach by chance.

    The null shuffles B's images: each B filter keeps its responses and B's filters keep their
    correlations with one another, but no B response belongs to the image A's responded to. Under
    "A and B respond to unrelated things" the real pairing and a shuffled one are exchangeable, so
    the shuffled median is what an optimal assignment of this many filters finds in noise on N
    images — high when filters are many and images few, which is why the median alone says little.
    """
    match, similarity, sign = match_filters(profile_a, profile_b)
    rng = np.random.default_rng(seed)
    shuffles = int(np.clip(-(-_CHANCE_FILTERS // max(profile_a.shape[0], 1)), 1, _MAX_SHUFFLES))
    medians = []
    for _ in range(shuffles):
        shuffled = profile_b[:, rng.permutation(profile_b.shape[1])]
        found = match_filters(profile_a, shuffled)[1]
        found = found[np.isfinite(found)]
        medians.append(float(np.median(found)) if found.size else np.nan)
    for a in (match, similarity, sign):
        a.setflags(write=False)  # shared by every later answer on the same records
    return Pairing(match, similarity, sign, float(np.mean(medians)), shuffles, int(profile_b.shape[1]))


def paired_similarity(profile_a: np.ndarray, profile_b: np.ndarray, match: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|Pearson correlation| and its sign (each (F_a,)) of fixed pairs (`match`, −1 none) at other
    steps than they were paired at: how alike the pairs still respond, without a new assignment."""
    match = np.asarray(match, dtype=np.int64)
    unit_a, unit_b = _unit_rows(profile_a, True), _unit_rows(profile_b, True)
    paired = (unit_a * unit_b[np.where(match >= 0, match, 0)]).sum(axis=1)
    paired = np.clip(paired, -1.0, 1.0)
    return np.where(match >= 0, np.abs(paired), np.nan), np.where(match >= 0, np.sign(paired), 0).astype(np.int64)


def match_weights(kernels_a: np.ndarray, kernels_b: np.ndarray) -> np.ndarray:
    """For each filter of A, its partner in B by |cosine| of their kernels: `match_filters` on the
    weights, for when no response profiles were logged (valid for a first layer, whose inputs are
    the same image channels in both)."""
    return match_filters(kernels_a, kernels_b, centred=False)[0]


def aligned_weight_drift(
    kernels_a: np.ndarray, kernels_b: np.ndarray, match_this: np.ndarray, match_prev: Optional[np.ndarray]
) -> dict[str, np.ndarray]:
    """Per-filter weight drift from A to B between matched filters, after aligning B's input channels.

    kernels_*: (F, Cin/groups, *kernel). match_this: (F_a,) partner in B of each filter of A
    (−1 none), from `match_filters` on this layer. match_prev: (Cin_a,) partner in B of each input
    channel of A — `match_filters` of the layer feeding this one — or None when the inputs are the
    same in both runs (the image). Without that alignment a permuted copy would look fully changed.
    Grouping is inferred as Cin_a / (Cin/groups); an input channel whose partner is −1 or lies
    outside the B filter's group has no counterpart weight and is compared against 0.
    Sign-aware: pairs are chosen on |correlation| (a negated response carries the same
    information), so a partner whose kernel is the negation of A's is the same filter flipped, not
    a changed one. Returns, (F_a,) each: cosine_distance to the partner or to its negation,
    whichever is nearer (0 same … 1 orthogonal), sign_flipped (1 where the negation was nearer,
    else 0) and norm_change; NaN for unmatched filters.
    """
    a = np.asarray(kernels_a, dtype=np.float64)
    b = np.asarray(kernels_b, dtype=np.float64)
    match_this = np.asarray(match_this, dtype=np.int64)
    f_a, per_group_a = a.shape[0], a.shape[1]
    f_b, per_group_b = b.shape[0], b.shape[1]
    matched = match_this >= 0
    partner = b[np.where(matched, match_this, 0)]  # (F_a, Cin_b/groups, *k)
    if match_prev is None:
        if per_group_a != per_group_b:
            raise ValueError(f"input channels differ ({per_group_a} vs {per_group_b}): pass match_prev")
        aligned = partner
    else:
        match_prev = np.asarray(match_prev, dtype=np.int64)
        groups = match_prev.shape[0] // per_group_a
        # Global B input channel of each (A filter, A in-group channel), then local to the B filter's group.
        group_a = np.arange(f_a) // (f_a // groups)
        global_a = group_a[:, None] * per_group_a + np.arange(per_group_a)[None, :]
        global_b = match_prev[global_a]
        group_b = np.where(matched, match_this, 0) // max(f_b // groups, 1)
        local_b = global_b - group_b[:, None] * per_group_b
        valid = (global_b >= 0) & (local_b >= 0) & (local_b < per_group_b)
        aligned = np.take_along_axis(
            partner, np.where(valid, local_b, 0).reshape(f_a, per_group_a, *([1] * (a.ndim - 2))), axis=1
        )
        aligned = np.where(valid.reshape(f_a, per_group_a, *([1] * (a.ndim - 2))), aligned, 0.0)
    drift = weight_drift(a, aligned)
    flipped = drift["cosine_distance"] > 1.0
    drift["cosine_distance"] = np.where(flipped, 2.0 - drift["cosine_distance"], drift["cosine_distance"])
    drift[SIGN_FLIPPED] = flipped.astype(np.float64)
    return {k: np.where(matched, v, np.nan) for k, v in drift.items()}
