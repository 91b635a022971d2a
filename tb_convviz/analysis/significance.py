"""How much of a filter's ablation effect on the probe is noise: exact tests and intervals for paired outcomes.

Ablating a filter re-scores the same n probe images, so clean and ablated correctness are paired
and only the discordant images carry information: b went correct → wrong, c wrong → correct, and
Δaccuracy (ablated − clean) = (c − b)/n. Per class the same holds within the class's examples, with
Δrecall = (gained − lost)/support. Every function broadcasts over filters (and classes), so a
ResNet-50's 26,560 filters cost a few array passes, not a Python loop each.
"""
from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, stats

# Run lengths searched for the fewest one-directional discordant images that reach alpha: the p-value
# 2·2^-k of such a run underflows to 0 before k = 1100, so every alpha > 0 is reached below it.
_MAX_ONE_SIDED_RUN = 1100


def _counts(x: ArrayLike, name: str) -> np.ndarray:
    """x as an int64 array of non-negative whole numbers; the error names the argument."""
    a = np.asarray(x)
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise ValueError(f"{name} must hold whole counts, got {a}")
    elif a.dtype.kind not in "iub":
        raise ValueError(f"{name} must hold counts, got dtype {a.dtype}")
    a = a.astype(np.int64)
    if np.any(a < 0):
        raise ValueError(f"{name} must be ≥ 0, got min {a.min()}")
    return a


def _check_level(value: float, name: str) -> float:
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie in (0, 1), got {value}")
    return float(value)


def mcnemar_exact(b: ArrayLike, c: ArrayLike) -> np.ndarray:
    """Two-sided exact McNemar p-value per filter: min(1, 2·BinomCDF(min(b, c); b + c, 1/2)).

    b: images correct → wrong under ablation, c: wrong → correct, broadcastable (e.g. (F,)). Given
    b + c discordant images, b is Binomial(b + c, 1/2) when ablation changes nothing on average;
    b = c = 0 gives p = 1. Returns float64 of the broadcast shape.
    """
    b, c = np.broadcast_arrays(_counts(b, "b"), _counts(c, "c"))
    return np.minimum(1.0, 2.0 * stats.binom.cdf(np.minimum(b, c), b + c, 0.5))


def _wilson(x: np.ndarray, n: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval (lower, upper) for x successes of n > 0 trials."""
    n = n.astype(np.float64)
    centre = (x + z * z / 2) / (n + z * z)
    half = z / (n + z * z) * np.sqrt(x * (n - x) / n + z * z / 4)
    return centre - half, centre + half


def paired_accuracy_ci(
    n: ArrayLike, correct_clean: ArrayLike, b: ArrayLike, c: ArrayLike, level: float = 0.95
) -> np.ndarray:
    """Confidence interval for Δaccuracy = (c − b)/n (ablated − clean) of paired binary outcomes.

    Newcombe (1998, Stat Med 17:2635) method 10, the hybrid score ("square-and-add") interval: the
    Wilson intervals of the clean and the ablated accuracy combined through the estimated
    correlation φ of the paired outcomes, with φ's numerator ad − bc reduced by n/2 when positive
    (0 in between), as in Newcombe's definition and Fagerland, Lydersen & Laake (2014). Closed-form
    (cheap for 26,560 filters) and near its nominal coverage for small n, where the Wald interval is
    not; clipped to [−1, 1].

    n: probe images; correct_clean: of them correct without ablation; b: correct → wrong;
    c: wrong → correct. All broadcast together (e.g. scalars with (F,)); the result has the
    broadcast shape plus a last axis (lower, upper). NaN where n = 0.
    """
    z = stats.norm.ppf(0.5 + _check_level(level, "level") / 2)
    n, k, b, c = np.broadcast_arrays(
        _counts(n, "n"), _counts(correct_clean, "correct_clean"), _counts(b, "b"), _counts(c, "c")
    )
    if np.any(k > n):
        raise ValueError("correct_clean must be ≤ n")
    if np.any(b > k):
        raise ValueError("b (correct → wrong) must be ≤ correct_clean")
    if np.any(c > n - k):
        raise ValueError("c (wrong → correct) must be ≤ n − correct_clean")
    empty = n == 0
    n = np.where(empty, 1, n)
    a = (k - b).astype(np.float64)  # correct both times
    d = (n - k - c).astype(np.float64)  # wrong both times
    ablated = a + c
    p_ablated, p_clean = ablated / n, k / n
    l1, u1 = _wilson(ablated, n, z)
    l2, u2 = _wilson(k.astype(np.float64), n, z)
    margins = ablated * (n - ablated) * k.astype(np.float64) * (n - k)
    cross = a * d - b.astype(np.float64) * c
    numerator = np.where(cross > n / 2, cross - n / 2, np.minimum(cross, 0.0))
    phi = np.where(margins > 0, numerator / np.sqrt(np.where(margins > 0, margins, 1.0)), 0.0)
    delta = p_ablated - p_clean
    down1, up2 = p_ablated - l1, u2 - p_clean
    down2, up1 = p_clean - l2, u1 - p_ablated
    lower = delta - np.sqrt(np.maximum(0.0, down1**2 + up2**2 - 2 * phi * down1 * up2))
    upper = delta + np.sqrt(np.maximum(0.0, down2**2 + up1**2 - 2 * phi * down2 * up1))
    ci = np.stack([np.maximum(lower, -1.0), np.minimum(upper, 1.0)], axis=-1)
    ci[empty] = np.nan
    return ci


def recall_delta_ci(
    support: ArrayLike, tp_clean: ArrayLike, lost: ArrayLike, gained: ArrayLike, level: float = 0.95
) -> np.ndarray:
    """Confidence interval for Δrecall = (gained − lost)/support per filter and class.

    Each class's examples form their own paired 2×2 table, so this is paired_accuracy_ci (Newcombe
    method 10) with n = support and correct_clean = tp_clean. support, tp_clean: (C,); lost
    (correct → wrong), gained (wrong → correct): (F, C) for just the filters wanted — the cost is
    that of the rows passed, so one filter or one layer is read-time cheap. Returns (F, C, 2);
    NaN for a class absent from the probe.
    """
    return paired_accuracy_ci(support, tp_clean, lost, gained, level)


def benjamini_hochberg(p: ArrayLike) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (step-up, monotone in p, capped at 1), same shape as p.

    Controls the false discovery rate over all the p-values passed — one layer's filters, or a whole
    network's when their p-values are concatenated. NaN (no test) stays NaN and does not count in m.
    """
    p = np.asarray(p, dtype=np.float64)
    flat = p.ravel()
    tested = ~np.isnan(flat)
    out = np.full(flat.shape, np.nan)
    out[tested] = stats.false_discovery_control(flat[tested], method="bh")  # raises outside [0, 1]
    return out.reshape(p.shape)


def significance(
    n: int, correct_clean: int, discordant: ArrayLike, alpha: float = 0.05
) -> dict[str, np.ndarray]:
    """Which filters' Δaccuracy on the probe exceeds noise, from their discordant counts.

    n: probe images; correct_clean: of them correct without ablation; discordant (F, 2): per filter
    (b, c) = (correct → wrong, wrong → correct). Keys: "p_value" (F,) exact McNemar; "p_adjusted"
    (F,) Benjamini–Hochberg over the layer's filters; "significant" (F,) bool, p_adjusted ≤ alpha
    (a false discovery rate of alpha); "d_accuracy_ci" (F, 2) Newcombe interval at level 1 − alpha,
    per filter and not adjusted for multiplicity, so it can exclude 0 for an unflagged filter;
    "discordant" (F, 2) int64, the input.
    """
    alpha = _check_level(alpha, "alpha")
    pairs = _counts(discordant, "discordant")
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"discordant must be shaped (filters, 2), got {pairs.shape}")
    b, c = pairs[:, 0], pairs[:, 1]
    p = mcnemar_exact(b, c)
    adjusted = benjamini_hochberg(p)
    return {
        "p_value": p,
        "p_adjusted": adjusted,
        "significant": adjusted <= alpha,
        "d_accuracy_ci": paired_accuracy_ci(n, correct_clean, b, c, level=1 - alpha),
        "discordant": pairs,
    }


def _rejection_bound(discordant: np.ndarray, alpha: float) -> np.ndarray:
    """Largest k with mcnemar_exact(k, D − k) ≤ alpha per discordant count D, −1 where none.

    The exact test rejects when the smaller side has ≤ k images: the region power sums over.
    """
    k = stats.binom.ppf(alpha / 2, discordant, 0.5)  # smallest k with CDF ≥ alpha/2; < D/2 for alpha < 1
    k = np.nan_to_num(k, nan=0.0).astype(np.int64)
    return np.where(mcnemar_exact(k, discordant - k) <= alpha, k, k - 1)


def _min_discordant(alpha: float) -> int:
    """Fewest discordant images, all in one direction, with which the exact test reaches p ≤ alpha."""
    run = np.arange(1, _MAX_ONE_SIDED_RUN)
    return int(run[np.argmax(mcnemar_exact(0, run) <= alpha)])


def mcnemar_power(n: int, effect: float, discordant_rate: float | None = None, alpha: float = 0.05) -> float:
    """Exact probability that the two-sided exact McNemar test at level alpha flags an effect.

    n paired images; effect: the population Δ (accuracy or recall, sign irrelevant); discordant_rate
    ψ: the share of images whose correctness changes, ≥ |effect|; None means ψ = |effect|, every
    change in one direction. Sums over the discordant count D ~ Binomial(n, ψ) the chance that the
    larger side, ~ Binomial(D, (ψ + |effect|)/(2ψ)), lands in the test's rejection region. No normal
    approximation; O(n).
    """
    alpha = _check_level(alpha, "alpha")
    delta = abs(float(effect))
    psi = delta if discordant_rate is None else float(discordant_rate)
    if not 0 < psi <= 1 or delta > psi:
        raise ValueError(f"need 0 ≤ |effect| ≤ discordant_rate ≤ 1 and a rate > 0, got {effect}, {discordant_rate}")
    d = np.arange(int(n) + 1)
    bound = _rejection_bound(d, alpha)
    towards = (psi + delta) / (2 * psi)
    reject = stats.binom.sf(d - bound - 1, d, towards) + stats.binom.cdf(bound, d, towards)
    return float(np.sum(stats.binom.pmf(d, int(n), psi) * reject))


def detectable_effect(
    n: ArrayLike, alpha: float = 0.05, power: float = 0.8, discordant_rate: float | None = None
) -> float | np.ndarray:
    """Smallest |Δ| (accuracy, or recall with n = the class's support) the exact McNemar test
    flags with the given power on n probe images; NaN where no effect is detectable.

    discordant_rate None: every change in one direction (ψ = |Δ|), where the fewest images suffice
    in the normal approximation (Connor 1987) and, at 80% power and α = 0.05, for the exact test
    too from n = 7 on (at n = 6, nearly every image changing reaches |Δ| = 0.93 rather than 0.96).
    Solved exactly: P(Binomial(n, Δ) ≥ k) = power, k the fewest one-way discordant images that
    reach alpha (6 at α = 0.05, so with 5 examples of a class no Δrecall is detectable at all).
    With a rate ψ the exact power (mcnemar_power) is solved for Δ ≤ ψ. n may be an array (one per
    class); the result has its shape.
    """
    alpha, power = _check_level(alpha, "alpha"), _check_level(power, "power")
    if power <= alpha:
        raise ValueError(f"power must exceed alpha, got {power} ≤ {alpha}")
    sizes = _counts(n, "n")
    if discordant_rate is None:
        k = _min_discordant(alpha)
        # P(Binomial(n, Δ) ≥ k) is the Beta(k, n − k + 1) CDF at Δ: its quantile is the answer.
        enough = sizes >= k
        effect = np.where(enough, stats.beta.ppf(power, k, np.where(enough, sizes - k + 1, 1)), np.nan)
    else:
        psi = float(discordant_rate)
        if not 0 < psi <= 1:
            raise ValueError(f"discordant_rate must lie in (0, 1], got {discordant_rate}")

        def solve(size: int) -> float:
            if mcnemar_power(size, psi, psi, alpha) < power:
                return np.nan
            return optimize.brentq(lambda e: mcnemar_power(size, e, psi, alpha) - power, 0.0, psi, xtol=1e-10)

        distinct, inverse = np.unique(sizes, return_inverse=True)  # supports repeat across classes
        effect = np.array([solve(int(s)) for s in distinct])[inverse].reshape(sizes.shape)
    return float(effect) if effect.ndim == 0 else effect


def examples_needed(effect: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Fewest probe images (per class, for Δrecall) on which the exact McNemar test flags |effect|
    with the given power, every change in one direction (see detectable_effect). Exact: n − k is
    the negative-binomial quantile of misses before k one-way discordant images (k as in
    detectable_effect), since Binomial(n, Δ) ≥ k ⇔ that count ≤ n − k.
    """
    alpha, power = _check_level(alpha, "alpha"), _check_level(power, "power")
    delta = abs(float(effect))
    if not 0 < delta <= 1:
        raise ValueError(f"effect must be non-zero with |effect| ≤ 1, got {effect}")
    k = _min_discordant(alpha)
    return k + int(stats.nbinom.ppf(power, k, delta))
