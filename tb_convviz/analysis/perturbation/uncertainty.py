"""How sure a per-filter number over the probe is: intervals and tests over its images.

The perturbation analyses average per-image statistics over the n probe images, so the images are
the sample: another probe from the same data would give another value. Each function takes the
per-image statistics (n, F) of a layer's filters and answers for every filter at once (a ResNet-50
layer costs a few array passes). Student's t stands in for the normal: probes of 16–64 images are
common, and at n = 16 the normal's 1.96 would make 95% intervals too narrow (t₁₅ = 2.13).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import stats

LEVEL = 0.95  # every interval's level (the dashboard says "95% interval")


def _t_quantile(n: int, level: float) -> float:
    return float(stats.t.ppf(0.5 + level / 2, n - 1))


def _as_float64(per_image: torch.Tensor | np.ndarray) -> np.ndarray:
    a = per_image.detach().cpu().double().numpy() if isinstance(per_image, torch.Tensor) else np.asarray(per_image, np.float64)
    if a.ndim != 2:
        raise ValueError(f"per-image statistics must be (images, filters), got shape {a.shape}")
    return a


def mean_interval(per_image: torch.Tensor | np.ndarray, level: float = LEVEL) -> np.ndarray:
    """t interval of each filter's mean over images, (n, F) → (F, 2) float32; NaN for n < 2."""
    a = _as_float64(per_image)
    n = a.shape[0]
    if n < 2:
        return np.full((a.shape[1], 2), np.nan, np.float32)
    mean = a.mean(0)
    half = _t_quantile(n, level) * a.std(0, ddof=1) / np.sqrt(n)
    return np.stack([mean - half, mean + half], axis=1).astype(np.float32)


def ratio_interval(numerator: torch.Tensor | np.ndarray, denominator: torch.Tensor | np.ndarray, level: float = LEVEL) -> np.ndarray:
    """Interval of R = Σ numerator / Σ denominator over images, (n, F) each → (F, 2) float32.

    Delta method for a ratio of means (the linearised residual numerator − R·denominator has mean
    0 and carries the variance of both), so an image that moves both the clean and the perturbed
    response counts once, as it should. NaN where n < 2 or the denominator sums to 0.
    """
    num, den = _as_float64(numerator), _as_float64(denominator)
    n = num.shape[0]
    den_mean = den.mean(0)
    if n < 2:
        return np.full((num.shape[1], 2), np.nan, np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = num.mean(0) / den_mean
        se = (num - ratio * den).std(0, ddof=1) / (np.sqrt(n) * np.abs(den_mean))
    half = _t_quantile(n, level) * se
    out = np.stack([ratio - half, ratio + half], axis=1)
    out[~(den_mean != 0)] = np.nan
    return out.astype(np.float32)


def paired_t_pvalue(differences: torch.Tensor | np.ndarray) -> np.ndarray:
    """Two-sided p-value of the paired t test that each filter's mean per-image difference is 0,
    (n, F) → (F,) float64.

    A filter whose differences are all equal (sd 0) gets p = 1 when they are all 0 and p = 0
    otherwise (every image moved it the same way); NaN for n < 2.
    """
    d = _as_float64(differences)
    n = d.shape[0]
    if n < 2:
        return np.full(d.shape[1], np.nan)
    mean, sd = d.mean(0), d.std(0, ddof=1)
    # A spread below float noise of the mean is no spread: the images all moved alike.
    flat = sd <= 1e-12 * np.maximum(np.abs(d).max(0), 1e-300)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = mean / (sd / np.sqrt(n))
    p = 2 * stats.t.sf(np.abs(t), n - 1)
    return np.where(flat, np.where(np.abs(mean) > 0, 0.0, 1.0), p)
