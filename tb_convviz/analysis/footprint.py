"""Where a layer's kernel energy sits, and how many of its filters are dead or near-duplicates.

Kernel inspection that guides architecture tuning: a 5×5 layer whose outer ring carries 3% of the
energy could be a 3×3; a layer with many near-parallel or dead filters could be narrower. The
answers are hints to test (retrain, or ablate), not proofs: energy says nothing of what the input
looks like. Kernels are (filters, in_channels/groups, *kernel) with 1–3 kernel dims; for a conv
followed by BatchNorm pass the effective kernel, so each filter weighs what it does at inference.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from tb_convviz.analysis.kernels import DEAD_RELATIVE_NORM, filter_stats

# Keeping ≥ 95% of the energy leaves a kernel change of ≤ √5% ≈ 22% in norm: small enough that the
# smaller kernel is worth a retrain to try, large enough that it is not a claim of equivalence.
KEEP_ENERGY = 0.95
# |cos| above this and two filters point the same way (or opposite) to within ~18°: one of them,
# scaled, nearly reproduces the other, so the pair is close to one filter's worth of features.
DUPLICATE_COS = 0.95
# From one filter in 20 on, pruning or merging would save a visible share of the layer's compute.
DUPLICATE_HINT_SHARE = 0.05
DEAD_HINT_SHARE = 0.05
# Cosine rows computed at once: rows × filters ≤ this many floats (64 MB), so any width fits.
GRAM_CHUNK = 1 << 24


def offset_rings(kernel_size: tuple[int, ...]) -> np.ndarray:
    """Ring of every kernel offset, (*kernel) int: the Chebyshev distance from the centre, floored.

    Centre of a side s is (s − 1)/2. An odd side has rings 0, 1, … at offsets 0, ±1, …; an even
    side has its centre between the two middle taps, and offsets ±½ form ring 0, ±1½ ring 1, … —
    so a 4×4's ring 0 is its central 2×2, the size it would shrink to.
    """
    sides = [np.floor(np.abs(np.arange(s) - (s - 1) / 2)).astype(np.int64) for s in kernel_size]
    return np.maximum.reduce(np.meshgrid(*sides, indexing="ij"))


def _kept_size(kernel_size: tuple[int, ...], ring: int) -> tuple[int, ...]:
    """The kernel size that keeps rings ≤ ring: 2r + 1 taps per odd side, 2r + 2 per even one."""
    return tuple(min(s, 2 * ring + 1 + (s + 1) % 2) for s in kernel_size)


def _size_name(kernel_size: tuple[int, ...]) -> str:
    """"3-tap" for one kernel dim, "3×3" or "3×3×3" for more."""
    return f"{kernel_size[0]}-tap" if len(kernel_size) == 1 else "×".join(map(str, kernel_size))


def _near_duplicates(flat: torch.Tensor, alive: torch.Tensor, groups: int) -> tuple[torch.Tensor, int]:
    """Per filter (F,) bool: |cos| > DUPLICATE_COS to another live filter of its group; and the pair count.

    Row chunks of the cosine matrix keep memory at GRAM_CHUNK floats whatever F is; each unordered
    pair is counted once, from its upper triangle.
    """
    count = flat.shape[0]
    unit = flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-30)
    unit = unit * alive.unsqueeze(1)  # a dead filter has no direction: cosine 0 with everything
    group = torch.arange(count, device=flat.device) // (count // groups)
    cols = torch.arange(count, device=flat.device)
    flagged = torch.zeros(count, dtype=torch.bool, device=flat.device)
    pairs = 0
    step = max(1, GRAM_CHUNK // count)
    for start in range(0, count, step):
        rows = cols[start : start + step]
        close = (unit[rows] @ unit.T).abs() > DUPLICATE_COS
        close &= (cols > rows[:, None]) & (group[rows][:, None] == group)
        pairs += int(close.sum())
        flagged[rows] |= close.any(1)
        flagged |= close.any(0)
    return flagged, pairs


def _hint(size: tuple[int, ...], ring_energy: np.ndarray, dead: int, duplicates: int, filters: int) -> str | None:
    """The plain-words suggestions for a layer, "; "-joined, or None when there are none."""
    hints = []
    kept = np.cumsum(ring_energy)[:-1]  # share kept by each smaller kernel; none for 1×1
    smaller = np.flatnonzero(kept >= KEEP_ENERGY)
    if smaller.size:
        ring = int(smaller[0])
        percent = math.floor(kept[ring] * 100 + 1e-9)  # rounded down: "100%" only when nothing is lost
        noun = " kernel" if len(size) == 1 else ""  # "a 3-tap kernel", "a 3×3"
        hints.append(
            f"a {_size_name(_kept_size(size, ring))}{noun} would keep {percent}% "
            f"of this {_size_name(size)} layer's energy"
        )
    if duplicates / filters >= DUPLICATE_HINT_SHARE:
        hints.append(
            f"{round(100 * duplicates / filters)}% of filters ({duplicates}) are near-duplicates "
            f"(|cos| > {DUPLICATE_COS}) of another filter"
        )
    if dead / filters >= DEAD_HINT_SHARE:
        hints.append(
            f"{round(100 * dead / filters)}% of filters ({dead}) are dead "
            f"(norm ≤ {DEAD_RELATIVE_NORM:g} × the layer's median): they add nothing"
        )
    return "; ".join(hints) or None


def kernel_footprint(kernels: torch.Tensor | np.ndarray, groups: int = 1) -> dict[str, object]:
    """Energy by kernel offset and ring, dead and near-duplicate filters, and a plain-words hint.

    kernels: (F, in_channels/groups, *kernel), 1–3 kernel dims. groups: the conv's groups; filters
    of different groups read different inputs, so only filters of one group can duplicate each other.
    Keys: "offset_energy" (*kernel) share of Σw² (over filters and input channels) per offset, sums
    to 1 (NaN for an all-zero layer); "ring_energy" (R,) the same per ring (offset_rings);
    "dead_share" float, filters with norm ≤ 1e-6 × the layer's median, or 0 (as the kernel stats);
    "duplicate_share" float, filters with |cos| > 0.95 to another live filter;
    "duplicate_pairs" int, such unordered pairs; "hint" str or None, "; "-joined sentences such as
    "a 3×3 would keep 96% of this 5×5 layer's energy" (the smallest kernel keeping ≥ 95%, its share
    rounded down) or "12% of filters (31) are near-duplicates (|cos| > 0.95) of another filter".
    """
    w = torch.as_tensor(kernels).detach()
    if not 3 <= w.dim() <= 5 or w.shape[0] == 0:
        raise ValueError(
            f"kernels must be shaped (filters, in_channels, *kernel) with 1-3 kernel dims, got {tuple(w.shape)}"
        )
    count, size = w.shape[0], tuple(w.shape[2:])
    if groups < 1 or count % groups:
        raise ValueError(f"groups must divide the {count} filters, got {groups}")
    energy = w.double().square().sum((0, 1)).cpu().numpy()
    total = energy.sum()
    offset_energy = energy / total if total > 0 else np.full(size, np.nan)
    rings = offset_rings(size)
    ring_energy = np.bincount(rings.ravel(), weights=offset_energy.ravel(), minlength=int(rings.max()) + 1)
    dead = filter_stats(w)["dead"].bool()
    duplicate, pairs = _near_duplicates(w.float().reshape(count, -1), ~dead, groups)
    dead_count, duplicate_count = int(dead.sum()), int(duplicate.sum())
    return {
        "offset_energy": offset_energy,
        "ring_energy": ring_energy,
        "dead_share": dead_count / count,
        "duplicate_share": duplicate_count / count,
        "duplicate_pairs": pairs,
        "hint": _hint(size, ring_energy, dead_count, duplicate_count, count),
    }
