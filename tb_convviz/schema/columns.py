"""What every per-filter number means, declared once: its label, unit, description, which way is
better, its group and its interval companion.

TensorBoard's summaries carry their display name and description with the data, so a dashboard
can draw what it has never seen; this module does the same for convviz's per-filter columns. The
reader builds `filter_table` and `columns` from these declarations, `/index` and `/table` send them
to the dashboard (which has no column of its own), and a user's `FilterMetric` stores its
declaration inside its record, so a number defined in a training script is drawn and exported
like a built-in one.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping, Optional

from tb_convviz.schema import format as fmt

BETTER = ("higher", "lower")
# Where a sorted table starts: the lowest values, the highest, or the largest magnitudes — the
# filters a user looks at first (most accuracy lost, most selective, most drifted).
FIRST = ("low", "high", "abs")
# How the dashboard shows a value; CSV exports always write the raw number.
FORMATS = ("number", "signed", "percent", "count", "flag", "angle", "index", "pvalue")  # pvalue: "< 0.001" below it
# Table groups in the order the dashboard shows them.
GROUPS = ("impact", "statistics", "drift", "activation", "perturbation", "counterfactual", "user")


@dataclass(frozen=True)
class Column:
    """One per-filter scalar of a record, described for people.

    `name` is the array's name in its record (`kind`); `ci` names its (F, 2) interval companion in
    the same record; `reduce="mean"` makes a (F, X) curve a column by its mean over X;
    `exact_only` columns are known only for filters ablated exactly (NaN for the others).
    """

    name: str
    label: str
    description: str
    kind: str
    group: str
    unit: str = ""
    better: Optional[str] = None
    first: str = "high"
    format: str = "number"
    ci: Optional[str] = None
    reduce: Optional[str] = None
    exact_only: bool = False

    def declaration(self) -> dict[str, Any]:
        """The JSON form `/index`, `/table` and `logs.columns` answer (and a metrics record stores)."""
        out = asdict(self)
        del out["reduce"], out["exact_only"]
        return out


def column_from_declaration(decl: Any, kind: str) -> Column:
    """A column stored in a record's metadata (a user's metric); ValueError when it is malformed."""
    if not isinstance(decl, Mapping):
        raise ValueError(f"a column declaration must be an object, got {type(decl).__name__}")
    text = {k: decl.get(k) for k in ("name", "label", "description", "group", "unit")}
    if not isinstance(text["name"], str) or not text["name"]:
        raise ValueError("a column declaration needs a non-empty name")
    for key, value in text.items():
        if value is not None and not isinstance(value, str):
            raise ValueError(f"column {text['name']!r}: {key} must be text")
    better, first, form = decl.get("better"), decl.get("first", "high"), decl.get("format", "number")
    if better not in (None, *BETTER) or first not in FIRST or form not in FORMATS:
        raise ValueError(f"column {text['name']!r}: better, first or format is not one this version knows")
    return Column(
        name=text["name"], label=text["label"] or text["name"], description=text["description"] or "", kind=kind,
        group=text["group"] or "user", unit=text["unit"] or "", better=better, first=first, format=form,
    )


def _c(kind: str, group: str, name: str, label: str, description: str, **kw: Any) -> Column:
    return Column(name=name, label=label, description=description, kind=kind, group=group, **kw)


_F, _P, _I = fmt.KIND_FILTERS, fmt.KIND_PERTURBATION, fmt.KIND_IMPACT

# Built-in per-filter columns, by record kind, in table order within their group.
BUILTIN: tuple[Column, ...] = (
    # impact (exact ablation on the probe, Taylor estimate, selectivity): `impact=True`
    _c(_I, "impact", "d_accuracy", "Δaccuracy", "Change of probe accuracy when the filter is zeroed (exact ablation; "
       "NaN where only estimated). Its interval is the 95% (1 − alpha) paired interval of that change, for this "
       "filter alone (not adjusted for the layer's many filters, so it can exclude 0 where the adjusted test "
       "is not significant).",
       unit="fraction", better="higher", first="low", format="percent", ci="d_accuracy_ci", exact_only=True),
    _c(_I, "impact", "significant", "Significant", "1 when the accuracy change is significant after "
       "Benjamini–Hochberg adjustment over the layer's ablated filters (exact McNemar test, false discovery "
       "rate at the record's alpha)", first="high", format="flag", exact_only=True),
    _c(_I, "impact", "p_adjusted", "p (BH)", "Benjamini–Hochberg-adjusted p-value (over the layer's ablated filters) of the exact McNemar test that the filter's "
       "ablation changes probe predictions", better="lower", first="low", format="pvalue", exact_only=True),
    _c(_I, "impact", "p_value", "p", "Unadjusted p-value of the exact McNemar test on the ablated filter's "
       "changed predictions", better="lower", first="low", format="pvalue", exact_only=True),
    _c(_I, "impact", "d_loss", "Δloss", "Change of mean cross-entropy on the probe when the filter is zeroed "
       "(exact ablation)", better="lower", first="high", format="signed", exact_only=True),
    _c(_I, "impact", "d_confidence", "Δconfidence", "Change of the mean probability of the true class when the "
       "filter is zeroed", better="higher", first="low", format="signed", exact_only=True),
    _c(_I, "impact", "flips", "Flips", "Probe predictions that change class when the filter is zeroed", first="high", format="count", exact_only=True),
    _c(_I, "impact", "taylor_d_loss", "Taylor Δloss", "First-order estimate of Δloss from one backward pass, for "
       "every filter", better="lower", first="high", format="signed"),
    _c(_I, "impact", "exact", "Exact", "1 when the filter was ablated exactly at this step; 0 when only the Taylor "
       "estimate is known", format="flag"),
    _c(_I, "impact", "sampled", "Calibration", "1 when the filter's exact result checks the Taylor estimate without "
       "bias: its whole layer was ablated, or it was drawn at random on the layer's calibration turn", format="flag"),
    _c(_I, "impact", "class_selectivity", "Class sel.", "Class selectivity index of the filter's mean activation: "
       "0 fires alike for every class, 1 for one class only", first="high"),
    _c(_I, "impact", "act_on_errors", "Act. on errors", "Mean activation on probe examples the model gets wrong"),
    _c(_I, "impact", "act_on_correct", "Act. on correct", "Mean activation on probe examples the model gets right"),
    _c(_I, "impact", fmt.TOP_EXAMPLE_PREFIX + "concentration", "Top-k concentration", "Share of the filter's top "
       "activating probe examples that carry its most common label", first="high", format="percent"),
    _c(_I, "impact", fmt.TOP_EXAMPLE_PREFIX + "class", "Top-k class", "The most common label among the filter's top "
       "activating probe examples", format="index"),
    _c(_I, "impact", fmt.TOP_EXAMPLE_PREFIX + "flag", "One-class top-k", "1 when at least 90% of the filter's top "
       "activating examples share a label: a filter that may key on one class (or a cue it carries)", format="flag"),
    # statistics of the weights
    _c(_F, "statistics", "l2", "L2 norm", "L2 norm of the filter's kernel (all input channels)", first="low"),
    _c(_F, "statistics", "mean_abs", "Mean |w|", "Mean absolute weight of the filter's kernel", first="low"),
    _c(_F, "statistics", "dead", "Dead", "1 when the kernel's norm is at most 1e-6 × the layer's median norm",
       format="flag"),
    # drift of the weights between logs
    _c(_F, "drift", "cosine_distance_prev", "Drift vs prev.", "Cosine distance of the kernel to its previous log's "
       "(0 unchanged, 1 orthogonal, 2 sign-flipped)", first="high"),
    _c(_F, "drift", "norm_change_prev", "Norm change vs prev.", "Relative change of the kernel's L2 norm since the "
       "previous log", unit="fraction", first="abs", format="percent"),
    _c(_F, "drift", "cosine_distance_first", "Drift vs first", "Cosine distance of the kernel to the run's first "
       "logged kernel", first="high"),
    # activations on the probe
    _c(_F, "activation", "act_mean", "Act. mean", "Mean activation over every probe image and position"),
    _c(_F, "activation", "act_max", "Act. max", "Largest activation over every probe image and position"),
    _c(_F, "activation", "act_frac_pos", "Active share", "Share of probe positions where the filter's output is "
       "positive", unit="fraction", first="low", format="percent"),
    # perturbation responses
    _c(_P, "perturbation", "osi", "OSI", "Orientation selectivity on oriented gratings (1 − circular variance over "
       "doubled angles): 0 untuned, 1 one orientation only", first="high"),
    _c(_P, "perturbation", "preferred_orientation", "Pref. orientation", "Grating orientation the filter responds "
       "to most, counter-clockwise from horizontal stripes", unit="°", format="angle"),
    _c(_P, "perturbation", "tuning_frequency", "Pref. frequency", "Grating frequency of the filter's strongest "
       "response", unit="cycles/px"),
    _c(_P, "perturbation", "rotation_response", "Rotated-probe response", "Mean response to the probe rotated by each "
       "angle, relative to the unrotated probe (1: rotation-invariant)", first="low", reduce="mean"),
    _c(_P, "perturbation", "stability", "Noise stability", "Cosine of the filter's maps on the probe with and "
       "without Gaussian noise, mean over the noise levels (1: unmoved by noise). Its interval is the 95% t "
       "interval over the probe's images", better="higher", first="low", reduce="mean", ci="stability_ci"),
    _c(_P, "perturbation", "fgsm", "FGSM", "Relative change of the filter's mean squared activation under an FGSM "
       "attack on the probe. Its interval is the 95% interval over the probe's images (delta method)", first="high",
       ci="fgsm_ci"),
    _c(_P, "perturbation", "pgd", "PGD", "Relative change of the filter's mean squared activation under a PGD "
       "attack on the probe. Its interval is the 95% interval over the probe's images (delta method)", first="high",
       ci="pgd_ci"),
    _c(_P, "perturbation", "shift", "Shift equivariance", "Cosine of the map on a circularly shifted input with the "
       "shifted map, mean over the shifts (1: follows the shift)", first="low", reduce="mean"),
    _c(_P, "perturbation", "reversal", "Reversal symmetry", "Cosine of the map on the time-reversed input with the "
       "reversed map: 1 palindromic kernel, −1 antisymmetric", first="abs"),
    _c(_P, "perturbation", fmt.SHAPE_TEXTURE_INDEX, "Shape–texture", "−1 responds to texture only, +1 to shape only "
       "(patch-shuffled and texture-removed probes)", first="abs"),
    _c(_P, "perturbation", "st/shape_sensitivity", "Shape sensitivity", "Relative change of the response when the "
       "probe's shape is destroyed (patches shuffled)", first="high"),
    _c(_P, "perturbation", "st/texture_sensitivity", "Texture sensitivity", "Relative change of the response when "
       "the probe's texture is removed (smoothed)", first="high"),
)


# Numbers of a whole layer at a step, shown above its filter table.
LAYER_SCALARS: tuple[Column, ...] = (
    _c(_I, "impact", "accuracy", "Probe accuracy", "Accuracy of the model on the labelled probe at this step",
       unit="fraction", format="percent"),
    _c(_I, "impact", "detectable_d_accuracy", "Detectable Δaccuracy", "The smallest accuracy change one filter's "
       "ablation must cause for the exact test to call it significant on a probe this size (larger probes detect "
       "smaller effects)", unit="fraction", format="percent"),
    _c(_I, "impact", "taylor_spearman", "Taylor vs exact ρ", "Rank correlation of the Taylor estimate with exact "
       "ablation on the layer's random calibration samples of its last logs (whole layers: every filter): how far "
       "the estimate can be trusted for the filters not ablated exactly"),
)


def counterfactual_columns(name: str) -> tuple[Column, ...]:
    """The columns a user's counterfactual `name` adds to perturbation records (the interval, p and
    q only in records logged since they were computed)."""
    key = fmt.COUNTERFACTUAL_PREFIX + name
    return (
        _c(_P, "counterfactual", key, f"{name}: change", f"Signed relative change of the filter's mean |activation| "
           f"when the probe is edited by the counterfactual {name!r}. Its interval is the 95% interval over the "
           "probe's images (delta method), unadjusted", unit="fraction", first="abs", format="percent", ci=f"{key}/ci"),
        _c(_P, "counterfactual", f"{key}/flag", f"{name}: flagged", "1 when the filter reacts to the edit for real "
           "(q ≤ 0.05), by at least 5%, and far more than the layer's other filters (robust z > 3.5): it detects "
           "what the edit removes", format="flag"),
        _c(_P, "counterfactual", f"{key}/q", f"{name}: q (BH)", "Benjamini–Hochberg q-value within the layer of the "
           "paired t test over probe images that the edit leaves the filter's mean |activation| unchanged",
           better="lower", first="low", format="pvalue"),
        _c(_P, "counterfactual", f"{key}/p", f"{name}: p", "Unadjusted p-value of that paired t test over the probe's "
           "images", better="lower", first="low", format="pvalue"),
        _c(_P, "counterfactual", f"{key}/z", f"{name}: z", "Robust z-score of that change among the layer's filters "
           "(median and MAD): how unusual this filter's sensitivity is", first="abs", format="signed"),
        _c(_P, "counterfactual", f"{key}/cosine", f"{name}: map cosine", "Cosine of the filter's maps with and "
           "without the edit (1: the edit changes nothing)", first="low"),
    )


def counterfactual_columns_of(names: list[str]) -> list[Column]:
    """The columns of the counterfactuals whose arrays a perturbation record holds (`names`)."""
    present = set(names)
    edits = sorted({n[len(fmt.COUNTERFACTUAL_PREFIX):] for n in names
                    if n.startswith(fmt.COUNTERFACTUAL_PREFIX) and n.count("/") == 1})
    return [c for e in edits for c in counterfactual_columns(e) if c.name in present]


def columns_of(kind: str, names: list[str]) -> list[Column]:
    """The declared columns of a record of `kind` holding the arrays `names`, in declaration order;
    a counterfactual's columns follow from its arrays' names."""
    present = set(names)
    out = [c for c in BUILTIN if c.kind == kind and c.name in present]
    if kind == fmt.KIND_PERTURBATION:
        out.extend(counterfactual_columns_of(names))
    return out


def with_companion(column: Column, names: list[str]) -> Column:
    """`column` without its interval companion when the record lacks it (logs from before intervals)."""
    return column if column.ci is None or column.ci in names else replace(column, ci=None)


def ci_bounds(name: str) -> tuple[str, str]:
    """CSV headers of a column's interval: its lower and upper bound."""
    return f"{name}_lo", f"{name}_hi"
