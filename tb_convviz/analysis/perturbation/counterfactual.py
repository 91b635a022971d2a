"""How each filter reacts to the user's own edits of the probe, how sure that is over the probe's
images, and which filters react far more than the rest of their layer (they detect what the edit
removes)."""
from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import torch
from torch import nn

from tb_convviz.analysis.perturbation.engine import (
    CLEAN,
    DEFAULT_MAX_BATCH_BYTES,
    Arrays,
    CombinedPass,
    Finish,
    image_index,
    prepare,
    run_alone,
)
from tb_convviz.analysis.perturbation.measures import map_cosine, to_numpy
from tb_convviz.analysis.perturbation.uncertainty import paired_t_pvalue, ratio_interval
from tb_convviz.analysis.significance import benjamini_hochberg

Counterfactual = Callable[[torch.Tensor], torch.Tensor]

ROBUST_Z_FLAG = 3.5  # Iglewicz & Hoaglin's cut-off for the modified z-score: an outlier, not just a large value
# A relative change below this is no reaction. When an edit leaves most filters unchanged, their
# MAD is ~0 and specks of change score huge z, so a flagged filter must also move its mean
# |activation| by at least this much; and a shape–texture index shrinks to 0 when the two
# sensitivities sum to less.
MIN_CHANGE = 0.05
# A flagged filter's change must be real, not image-to-image variation: its paired test's
# Benjamini–Hochberg q-value within the layer at most this (a false discovery rate of 5%).
FLAG_Q = 0.05


def robust_z(values: torch.Tensor) -> torch.Tensor:
    """Modified z-score 0.6745·(v − median)/MAD (Iglewicz & Hoaglin) over a layer's filters (F,) → (F,).

    When over half the filters tie (MAD = 0) the mean absolute deviation ×1.2533 stands in; when
    all are equal every score is 0.
    """
    med = values.median()
    dev = (values - med).abs()
    mad = dev.median()
    if mad > 0:
        return 0.6745 * (values - med) / mad
    meanad = dev.mean()
    if meanad > 0:
        return (values - med) / (1.253314 * meanad)
    return torch.zeros_like(values)


def counterfactual_plan(combined: CombinedPass, x: torch.Tensor, counterfactuals: Mapping[str, Counterfactual]) -> Finish:
    n = x.shape[0]
    combined.reference(CLEAN, x)

    def mean_abs_and_cosine(name: str, out: torch.Tensor, first: int) -> torch.Tensor:
        clean = combined.maps(CLEAN)[name][image_index(first, len(out), n, out.device)]
        return torch.stack([out.abs().mean(-1), map_cosine(out, clean)], dim=1)  # (rows, 2, F)

    for cf_name, edit in counterfactuals.items():
        with torch.no_grad():
            edited = edit(x.clone())
        if not isinstance(edited, torch.Tensor) or edited.shape != x.shape:
            raise ValueError(f"counterfactual {cf_name!r} must return a tensor shaped {tuple(x.shape)}")
        combined.add(f"cf/{cf_name}", edited, mean_abs_and_cosine)

    def finish() -> Arrays:
        result: Arrays = {name: {} for name in combined.layers}
        for name in combined.layers:
            before = combined.maps(CLEAN)[name].abs().mean(2)  # (N, F) per image
            for cf_name in counterfactuals:
                key = f"cf/{cf_name}"
                per_image = combined.reduced(key)[name]  # (N, 2, F)
                after, cosine = per_image[:, 0], per_image[:, 1].mean(0)
                mean_before = before.mean(0)
                change = (after.mean(0) - mean_before) / mean_before.clamp_min(1e-30)
                z = robust_z(change.abs())
                p = paired_t_pvalue(after - before)
                q = benjamini_hochberg(p) if np.isfinite(p).any() else p
                result[name][key] = to_numpy(change)
                result[name][key + "/ci"] = ratio_interval(after, before) - np.float32(1)
                result[name][key + "/p"] = p.astype(np.float32)
                result[name][key + "/q"] = q.astype(np.float32)
                result[name][key + "/cosine"] = to_numpy(cosine)
                result[name][key + "/z"] = to_numpy(z)
                result[name][key + "/flag"] = to_numpy((z > ROBUST_Z_FLAG) & (change.abs() >= MIN_CHANGE)) & (q <= FLAG_Q)
        return result

    return finish


def counterfactual_sensitivity(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    counterfactuals: Mapping[str, Counterfactual],
    *,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> Arrays:
    """How each filter changes when the user's edit(batch) → batch is applied to the probe.

    Per counterfactual `c`: "cf/<c>" (F,) signed relative change of mean |activation|
    ((after − before)/before); "cf/<c>/ci" (F, 2) its 95% interval over the probe images (delta
    method for the ratio of means, `uncertainty.ratio_interval`); "cf/<c>/p" (F,) two-sided paired
    t test over images that the edit leaves the filter's mean |activation| unchanged, "cf/<c>/q"
    (F,) its Benjamini–Hochberg q-value within the layer; "cf/<c>/cosine" (F,) cosine of maps,
    averaged over images; "cf/<c>/z" (F,) robust z-score of |cf/<c>| within the layer;
    "cf/<c>/flag" (F,) bool: the change is real (q ≤ 0.05), large (|cf/<c>| ≥ 0.05) and far
    beyond the layer's others (z > 3.5), i.e. the filter detects what the edit removes.

    The test is why a flag can be trusted: the robust z only says a change is unusual in the layer,
    and on a small probe one image can make it so; the paired test asks whether the images agree.
    """
    x = prepare(model, x)
    return run_alone(model, layers, max_batch_bytes, lambda c: counterfactual_plan(c, x, counterfactuals))
