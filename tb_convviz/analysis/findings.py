"""What a run's logs say a user should look at: findings, each from a declared rule over logged arrays.

Every finding kind is declared once (`KINDS`: its label, rule, what it needs, the option that
enables it, its severity band and the view that shows it); the reader (`read/findings.py`), the
`/findings` route, the tab's Findings view and `tb-convviz report` all read these declarations.
The functions here are pure: arrays in, finding dicts out, no I/O.

Severity is a number in [0, 1): the kind's band (`FindingKind.severity`, 0.05 apart in the order
of `KINDS`: a shortcut outranks a needed filter, which outranks a dead one) plus up to
STRENGTH_SPAN × the finding's own strength in [0, 1] (how far past its threshold it is), so a
list sorted by severity is grouped by how much a kind matters and, within a kind, strongest first.

How sure each kind is: the α-controlled kinds (`tested=True`) come from exact or rank tests with
Benjamini–Hochberg adjustment over every test of the run at that step, so in a network where
nothing is there, the chance of any finding of such a kind is at most α (BH controls the
family-wise rate under the complete null). The other kinds are rules over measured quantities
(outlier scores, energy shares, weight equality): they say what the logs hold, not a p-value.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from scipy import stats

from tb_convviz.analysis.footprint import DUPLICATE_COS, KEEP_ENERGY, _kept_size, _size_name
from tb_convviz.analysis.perturbation.counterfactual import ROBUST_Z_FLAG, robust_z
from tb_convviz.schema.records import IMPACT_CLEAN_PRED, IMPACT_EXACT, IMPACT_FLIPS, TOP_EXAMPLE_PREFIX
from tb_convviz.analysis.significance import (
    benjamini_hochberg,
    detectable_effect,
    examples_needed,
    recall_delta_ci,
)


@dataclass(frozen=True)
class FindingKind:
    """One kind of finding, described for people and for the code that shows it.

    `rule`: the threshold in words; `needs`: what the logs must hold; `enable`: the ConvViz option
    that logs it; `severity`: the kind's band; `tested`: its findings are α-controlled tests;
    `mode`: the tab view that shows its evidence.
    """

    name: str
    label: str
    description: str
    rule: str
    needs: str
    enable: str
    severity: float
    tested: bool
    mode: str

    def declaration(self) -> dict[str, Any]:
        return asdict(self)


# Thresholds, each with why.
# A probe must be able to reveal a loss smaller than half its accuracy to say anything about single
# filters: a 6-image probe detects only a Δaccuracy of ≥ 96% (all six images flipping).
MAX_DETECTABLE = 0.5
TARGET_EFFECT = 0.10  # the loss a probe should reveal: what the "too small" message asks for
MIN_SUPPORT = 6  # fewer examples of a class and no Δrecall can be significant (6 one-way flips at α = 0.05)
CONCENTRATION = 0.9  # a filter's top examples "are one class" from this share on (the impact record's flag)
FRAGILE_SHARE = 0.5  # a class is fragile when one filter takes at least half of its probe recall
ERROR_AUC = 0.8  # "far more active on errors": an error outranks a correct example 4 times in 5
MIN_GROUP = 5  # examples of each side (errors, correct) the rank test needs in the profile images
TEXTURE_INDEX = -0.2  # a layer leans on texture when its filters' median index is at most this
SETTLED_CKA = 0.99
SETTLED_BY = 0.5  # "early": settled by half-way through the logged steps
UNSTABLE_MIN_FILTERS = 8  # an outlier needs a layer to stand out from
# When most of a layer moves alike its MAD is ~0 and a 4% excess scores z = 40: an unstable filter
# must also move at least this many times as much as the layer's median filter.
UNSTABLE_RATIO = 1.5
MAX_PER_KIND = 25  # findings listed per kind; the count of the rest is kept
STRENGTH_SPAN = 0.045  # within a kind's band: bands are 0.05 apart, so kinds never interleave

# The logged arrays these rules read, as the analyses that write them name them.
D_ACCURACY, D_ACCURACY_CI, P_VALUE, DISCORDANT = "d_accuracy", "d_accuracy_ci", "p_value", "discordant"
ACT_ON_ERRORS, ACT_ON_CORRECT, STABILITY, FGSM = "act_on_errors", "act_on_correct", "stability", "fgsm"
L2 = "l2"
TOP_FLAG, TOP_CLASS, TOP_CONCENTRATION = (TOP_EXAMPLE_PREFIX + k for k in ("flag", "class", "concentration"))
RING_ENERGY, DUPLICATE_PAIR_COUNT = "ring_energy", "duplicate_pairs"  # a kernels record's footprint (analysis.footprint)
# Evidence that is a curve for a picture (the report draws it) rather than a number for a table.
CURVES = ("curve", RING_ENERGY, "steps")


KINDS: tuple[FindingKind, ...] = (
    FindingKind("shortcut", "Shortcut", "Filters that one of your counterfactual edits moves far more than the rest "
                "of their layer, with the class zeroing them moves predictions away from: the pattern of a spurious cue. "
                "Strongest first: flagged by more of the edits, then by the larger change.",
                f"robust z > {ROBUST_Z_FLAG} and |change| ≥ 5% under a counterfactual edit (its flag)",
                "counterfactual responses", "counterfactuals={name: edit}", 0.95, False, "impact"),
    FindingKind("needed", "Needed", "Filters whose removal significantly lowers probe accuracy, strongest first, "
                "with the classes whose recall falls most.",
                "exact McNemar test of the ablation, Benjamini–Hochberg over every exactly ablated filter of the "
                "run, adjusted p ≤ α and Δaccuracy < 0", "exact ablation on a labelled probe", "impact=True", 0.9, True, "impact"),
    FindingKind("harmful", "Harmful", "Filters whose removal significantly raises probe accuracy.",
                "as needed, with Δaccuracy > 0", "exact ablation on a labelled probe", "impact=True", 0.85, True, "impact"),
    FindingKind("fragile_class", "Fragile class", "Classes whose recall rests on single filters: one filter's "
                "removal takes at least half of the class's recall.",
                f"a filter's removal lowers the class's recall by ≥ {FRAGILE_SHARE:.0%} of its clean recall, more "
                "often than it changes other images' predictions (one-sided Fisher exact test, Benjamini–Hochberg "
                "over every (filter, class) pair with changes, those short of the threshold at p = 1), p ≤ α",
                "exact ablation on a labelled probe", "impact=True", 0.8, True, "impact"),
    FindingKind("fires_on_errors", "Fires on errors", "Filters far more active on probe images the model gets "
                "wrong than on those it gets right.",
                f"one-sided Mann–Whitney test over the profile images, Benjamini–Hochberg over the run's filters, "
                f"p ≤ α and AUC ≥ {ERROR_AUC}", "impact records and response profiles",
                "impact=True and similarity_images > 0", 0.75, True, "impact"),
    FindingKind("unstable", "Unstable", "Filters whose response to noise or to an adversarial attack is an outlier "
                "of their layer.", f"robust z > {ROBUST_Z_FLAG} within the layer: noise instability (1 − noise "
                f"stability) or FGSM change, and at least {UNSTABLE_RATIO}× the layer's median", "perturbation responses",
                "perturbations=True", 0.7, False, "impact"),
    FindingKind("dead", "Dead", "Filters whose kernel is (near) zero: pruning them loses nothing.",
                "kernel norm ≤ 1e-6 × the layer's median", "filter statistics", "(always logged)", 0.65, False, "filters"),
    FindingKind("duplicate", "Duplicate", "Pairs of filters with the same kernel up to a positive scale: one of "
                "them could be pruned or merged.", f"cosine of the (BatchNorm-folded) kernels > {DUPLICATE_COS}",
                "full kernels", "(logged every kernels_every logs)", 0.6, False, "filters"),
    FindingKind("kernel_size", "Kernel size", "Layers whose kernels keep their energy in a smaller window.",
                f"a smaller kernel keeps ≥ {KEEP_ENERGY:.0%} of the layer's kernel energy", "full kernels",
                "(logged every kernels_every logs)", 0.55, False, "filters"),
    FindingKind("texture", "Texture", "Layers whose filters lean on texture rather than shape.",
                f"median shape–texture index ≤ {TEXTURE_INDEX}, one-sided Wilcoxon test over the layer's filters, "
                "Benjamini–Hochberg over layers, p ≤ α", "shape–texture responses",
                'perturbations={"shape_texture": True}', 0.5, True, "impact"),
    FindingKind("settled", "Settled", "Layers whose representation stopped changing early: candidates to freeze "
                "or to train at a lower rate.", f"debiased CKA with the final step ≥ {SETTLED_CKA} at every step from "
                f"one in the first {SETTLED_BY:.0%} of the logged steps on", "Gram matrices at ≥ 3 steps",
                "similarity_images > 0", 0.45, False, "similarity"),
    FindingKind("class_detector", "Class detector", "Filters whose top examples are one class and whose removal "
                "lowers that class's recall: information, not an alarm (an ordinary class detector looks the same); "
                "check them for a cue.", f"≥ {CONCENTRATION:.0%} of the top activating examples one class, and that "
                "class's recall falls more than other images' predictions change (one-sided Fisher exact test, BH over "
                "these filters)",
                "impact records (top examples and exact ablation)", "impact=True", 0.4, True, "impact"),
)
KIND_BY_NAME = {k.name: k for k in KINDS}


def finding(kind: str, layer: Optional[str], filters: Sequence[int], classes: Sequence[int], summary: str,
            evidence: Mapping[str, Any], strength: float, view: Mapping[str, Any], certainty: str) -> dict[str, Any]:
    """One finding as `logs.findings` returns it; severity = the kind's band + STRENGTH_SPAN × strength."""
    declared = KIND_BY_NAME[kind]
    strength = float(np.clip(np.nan_to_num(strength), 0.0, 1.0))
    return {
        "kind": kind,
        "layer": layer,
        "filters": [int(f) for f in filters],
        "classes": [int(c) for c in classes],
        "summary": summary,
        "evidence": _plain(dict(evidence)),
        "rule": declared.rule,
        "certainty": certainty,
        "severity": round(declared.severity + STRENGTH_SPAN * strength, 4),
        "view": {"view": declared.mode, **view},
    }


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays as Python numbers and lists, NaN as None."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in np.asarray(value, dtype=object).tolist()] if isinstance(value, np.ndarray) else [_plain(v) for v in value]
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def _pct(x: float) -> str:
    return f"{100 * x:+.1f}%"


def _ci(lo_hi: Sequence[float]) -> str:
    lo, hi = (float(v) for v in lo_hi)
    return f"[{100 * lo:+.1f}%, {100 * hi:+.1f}%]"


# -- how large a probe must be --------------------------------------------------------------


def probe_too_small(n: int, alpha: float) -> Optional[str]:
    """Why an n-image probe cannot support ablation findings, or None when it can."""
    smallest = detectable_effect(n, alpha) if n > 0 else float("nan")
    if math.isfinite(smallest) and smallest <= MAX_DETECTABLE:
        return None
    need = examples_needed(TARGET_EFFECT, alpha)
    can = f"only a Δaccuracy of ≥ {smallest:.0%}" if math.isfinite(smallest) else "no Δaccuracy at all"
    return (f"the probe's {n} labelled images can reveal {can} (exact McNemar test, α = {alpha:g}, 80% power), "
            f"so no single filter's effect can be shown; a probe of ≥ {need} images reveals a {TARGET_EFFECT:.0%} loss")


# -- per-class effects of ablations, sparse ------------------------------------------------


@dataclass(frozen=True)
class ClassEffects:
    """Per (filter, class) pair with any changed prediction, from an impact record's sparse flips:
    `filter`, `cls` (index into `classes`), `lost` (correct → wrong), `gained` (wrong → correct),
    `changed` (the class's images whose prediction changed at all), all (M,); per filter `flips`
    (filters,) images changed; per class `classes`, `support`, `tp_clean` (C,); `n` probe images.
    Pairs without a change are left out, so a 1000-class model costs the flips, not filters × classes."""

    filter: np.ndarray
    cls: np.ndarray
    lost: np.ndarray
    gained: np.ndarray
    changed: np.ndarray
    flips: np.ndarray
    classes: np.ndarray
    support: np.ndarray
    tp_clean: np.ndarray
    n: int

    def d_recall(self, at: Any = slice(None)) -> np.ndarray:
        """Δrecall of the pairs `at` (all by default)."""
        return (self.gained[at] - self.lost[at]) / self.support[self.cls[at]]

    def d_recall_ci(self, alpha: float, at: Any = slice(None)) -> np.ndarray:
        c = self.cls[at]
        return recall_delta_ci(self.support[c], self.tp_clean[c], self.lost[at], self.gained[at], 1 - alpha)

    def p_specific(self, at: Any = slice(None)) -> np.ndarray:
        """One-sided Fisher exact p, for the pairs `at`, that the class's correct images lose their
        prediction more often than the probe's other images change theirs: a recall loss of this
        class, not a shift of every prediction (a random network's constant prediction moving to
        another class). A pair that lost nothing has p = 1 without computing it."""
        lost, c = self.lost[at], self.cls[at]
        tp = self.tp_clean[c]
        changed_elsewhere = self.flips[self.filter[at]] - self.changed[at]
        out = np.ones(len(lost))
        some = lost > 0
        out[some] = stats.hypergeom.sf(lost[some] - 1, (tp + self.n - self.support[c])[some],
                                       (lost + changed_elsewhere)[some], tp[some])
        return out

    def fragile(self) -> np.ndarray:
        """(M,) bool: pairs whose filter takes ≥ FRAGILE_SHARE of the class's clean recall, in a
        class with enough examples for any change to be significant."""
        tp = self.tp_clean[self.cls]
        return (self.support[self.cls] >= MIN_SUPPORT) & (tp > 0) & (self.lost - self.gained >= FRAGILE_SHARE * tp)

    def of(self, f: int) -> np.ndarray:
        return np.flatnonzero(self.filter == f)


def class_effects(labels: np.ndarray, clean_pred: np.ndarray, flip_filter: np.ndarray, flip_image: np.ndarray,
                  flip_pred: np.ndarray) -> ClassEffects:
    """The sparse per-class recall changes of every ablated filter (see `ClassEffects`)."""
    labels, clean_pred = np.asarray(labels, np.int64), np.asarray(clean_pred, np.int64)
    flip_filter, flip_image, flip_pred = (np.asarray(a, np.int64) for a in (flip_filter, flip_image, flip_pred))
    classes, truth, support = np.unique(labels, return_inverse=True, return_counts=True)
    right = clean_pred == labels
    tp = np.bincount(truth[right], minlength=len(classes))
    was_right = right[flip_image]
    now_right = flip_pred == labels[flip_image]
    key = flip_filter * len(classes) + truth[flip_image]
    pairs, at = np.unique(key, return_inverse=True)
    lost = np.bincount(at, weights=was_right & ~now_right, minlength=len(pairs)).astype(np.int64)
    gained = np.bincount(at, weights=~was_right & now_right, minlength=len(pairs)).astype(np.int64)
    changed = np.bincount(at, minlength=len(pairs)).astype(np.int64)
    flips = np.bincount(flip_filter, minlength=int(flip_filter.max(initial=-1)) + 1).astype(np.int64)
    return ClassEffects(pairs // len(classes), pairs % len(classes), lost, gained, changed, flips, classes, support, tp,
                        len(labels))


def pushed_class(clean_pred: np.ndarray, flip_filter: np.ndarray, flip_image: np.ndarray, flip_pred: np.ndarray,
                 f: int) -> tuple[Optional[int], int]:
    """The class zeroing filter f moves most probe predictions away from (net), and how many; (None, 0) if none."""
    mine = np.asarray(flip_filter) == f
    before = np.asarray(clean_pred, np.int64)[np.asarray(flip_image)[mine]]
    after = np.asarray(flip_pred, np.int64)[mine]
    if not len(before):
        return None, 0
    values = np.union1d(before, after)
    net = np.array([int((before == v).sum() - (after == v).sum()) for v in values])
    best = int(np.argmax(net))
    return (int(values[best]), int(net[best])) if net[best] > 0 else (None, 0)


# -- impact: needed, harmful, fragile classes, class detectors -----------------------------


@dataclass(frozen=True)
class LayerImpact:
    """What one layer's impact record says (`logs.impact` arrays, and the layer's name)."""

    layer: str
    arrays: Mapping[str, np.ndarray]


def ablation_findings(layers: Sequence[LayerImpact], labels: np.ndarray, alpha: float, step: int) -> list[dict[str, Any]]:
    """`needed` and `harmful`: BH over every exactly ablated filter of the run."""
    d_accuracy, p_value, ci, exact, discordant = D_ACCURACY, P_VALUE, D_ACCURACY_CI, IMPACT_EXACT, DISCORDANT
    flips, clean_pred = IMPACT_FLIPS, IMPACT_CLEAN_PRED
    tests = [(li, np.flatnonzero(np.asarray(li.arrays[exact]).astype(bool))) for li in layers]
    p = np.concatenate([np.asarray(li.arrays[p_value], np.float64)[rows] for li, rows in tests]) if tests else np.zeros(0)
    adjusted = benjamini_hochberg(p) if len(p) else p
    out: list[dict[str, Any]] = []
    at = 0
    n = len(labels)
    for li, rows in tests:
        adj = adjusted[at : at + len(rows)]
        at += len(rows)
        a = li.arrays
        effects = class_effects(labels, a[clean_pred], *(a[k] for k in flips))
        for f, q in zip(rows, adj):
            d = float(a[d_accuracy][f])
            if not q <= alpha or d == 0:
                continue
            kind = "needed" if d < 0 else "harmful"
            mine = effects.of(int(f))
            d_recall = effects.d_recall(mine)
            order = np.argsort(d_recall if kind == "needed" else -d_recall, kind="stable")[:3]
            mine, d_recall = mine[order], d_recall[order]
            keep = (d_recall < 0) if kind == "needed" else (d_recall > 0)
            mine, d_recall = mine[keep], d_recall[keep]
            d_ci, p_cls = effects.d_recall_ci(alpha, mine), effects.p_specific(mine)
            classes = [int(effects.classes[effects.cls[i]]) for i in mine]
            per_class = [{"class": c, "d_recall": float(d_recall[k]), "d_recall_ci": d_ci[k], "p_class_specific": float(p_cls[k]),
                          "support": int(effects.support[effects.cls[i]])} for k, (c, i) in enumerate(zip(classes, mine))]
            b, c = (int(v) for v in a[discordant][f])
            worst = (f"; class {classes[0]} recall {_pct(per_class[0]['d_recall'])} {_ci(per_class[0]['d_recall_ci'])}"
                     if classes else "")
            out.append(finding(
                kind, li.layer, [int(f)], classes,
                f"{li.layer} filter {f}: zeroing it changes probe accuracy by {_pct(d)} {_ci(a[ci][f])} "
                f"(p = {q:.2g} adjusted over the run){worst}",
                {"d_accuracy": d, "d_accuracy_ci": a[ci][f], "p_value": float(a[p_value][f]), "p_adjusted_run": float(q),
                 "correct_to_wrong": b, "wrong_to_correct": c, "probe": n, "classes": per_class},
                min(1.0, abs(d) / 0.5), {"layer": li.layer, "step": step, "filter": int(f), "sort": d_accuracy},
                f"significant at α = {alpha:g} after Benjamini–Hochberg over {len(p)} ablated filters"))
    return out


def fragile_classes(layers: Sequence[LayerImpact], labels: np.ndarray, alpha: float, step: int) -> list[dict[str, Any]]:
    """`fragile_class`: classes a single filter's removal takes ≥ FRAGILE_SHARE of the recall from."""
    exact, flips, clean_pred, d_accuracy = IMPACT_EXACT, IMPACT_FLIPS, IMPACT_CLEAN_PRED, D_ACCURACY
    # Every pair with a change is a test; a pair short of the effect threshold can never be a finding
    # and counts with p = 1, which only makes BH stricter (its rejections shrink as p-values grow):
    # the exact test then runs on the few pairs that could matter, not on every flip of a ResNet-50.
    rows, tested = [], 0
    for li in layers:
        e = class_effects(labels, li.arrays[clean_pred], *(li.arrays[k] for k in flips))
        keep = np.asarray(li.arrays[exact]).astype(bool)[e.filter]
        tested += int(keep.sum())
        idx = np.flatnonzero(keep & e.fragile())
        rows.append((li.layer, e, idx, e.p_specific(idx)))
    p = np.concatenate([r[3] for r in rows] + [np.ones(tested - sum(len(r[2]) for r in rows))])
    adjusted = benjamini_hochberg(p) if len(p) else p
    per_class: dict[int, list[dict[str, Any]]] = {}
    at = 0
    for layer, e, idx, _ in rows:
        adj = adjusted[at : at + len(idx)]
        at += len(idx)
        hit = adj <= alpha
        idx, adj = idx[hit], adj[hit]
        d, d_ci = e.d_recall(idx), e.d_recall_ci(alpha, idx)
        for k, (i, q) in enumerate(zip(idx, adj)):
            c = e.cls[i]
            tp = e.tp_clean[c]
            per_class.setdefault(int(e.classes[c]), []).append(
                {"layer": layer, "filter": int(e.filter[i]), "d_recall": float(d[k]), "d_recall_ci": d_ci[k],
                 "p_adjusted": float(q), "share_of_recall_lost": float((e.lost[i] - e.gained[i]) / tp),
                 "support": int(e.support[c]), "clean_recall": float(tp / e.support[c])})
    out = []
    for cls, found in per_class.items():
        found.sort(key=lambda r: r["d_recall"])
        top = found[0]
        out.append(finding(
            "fragile_class", top["layer"], [top["filter"]], [cls],
            f"class {cls}: zeroing {top['layer']} filter {top['filter']} alone takes {top['share_of_recall_lost']:.0%} of "
            f"its recall (Δrecall {_pct(top['d_recall'])} {_ci(top['d_recall_ci'])}, {top['support']} examples); "
            f"{len(found)} filter{'s of the run do' if len(found) != 1 else ' of the run does'} so",
            {"filters": found[:5], "count": len(found)}, top["share_of_recall_lost"],
            {"layer": top["layer"], "step": step, "filter": top["filter"], "sort": d_accuracy},
            f"each listed filter significant at α = {alpha:g} after Benjamini–Hochberg over {len(p)} (filter, class) pairs"))
    return out


def class_detectors(layers: Sequence[LayerImpact], labels: np.ndarray, alpha: float, step: int) -> list[dict[str, Any]]:
    """`class_detector`: one-class top examples and a significant recall loss of that class."""
    exact, flips, clean_pred = IMPACT_EXACT, IMPACT_FLIPS, IMPACT_CLEAN_PRED
    top_flag, top_class, top_concentration = TOP_FLAG, TOP_CLASS, TOP_CONCENTRATION
    candidates = []
    for li in layers:
        a = li.arrays
        if top_flag not in a:
            continue
        flagged = np.flatnonzero(np.asarray(a[top_flag]).astype(bool) & np.asarray(a[exact]).astype(bool))
        if not len(flagged):
            continue
        e = class_effects(labels, a[clean_pred], *(a[k] for k in flips))
        for f in flagged:
            cls = int(a[top_class][f])
            pair = [i for i in e.of(int(f)) if int(e.classes[e.cls[i]]) == cls]
            if pair and e.d_recall(pair[:1])[0] < 0 and e.support[e.cls[pair[0]]] >= MIN_SUPPORT:
                at = pair[:1]
                candidates.append((li.layer, int(f), cls, float(a[top_concentration][f]), float(e.d_recall(at)[0]),
                                   e.d_recall_ci(alpha, at)[0], float(e.p_specific(at)[0])))
            else:
                candidates.append((li.layer, int(f), cls, float(a[top_concentration][f]), 0.0, None, 1.0))
    if not candidates:
        return []
    adjusted = benjamini_hochberg(np.array([c[6] for c in candidates]))
    out = []
    for (layer, f, cls, conc, d, d_ci, _), q in zip(candidates, adjusted):
        if q > alpha or d >= 0:
            continue
        out.append(finding(
            "class_detector", layer, [f], [cls],
            f"{layer} filter {f}: {conc:.0%} of its top examples are class {cls}, and zeroing it lowers class {cls}'s "
            f"recall by {_pct(d)} {_ci(d_ci)}",
            {"concentration": conc, "class": cls, "d_recall": d, "d_recall_ci": d_ci, "p_adjusted": float(q)},
            min(1.0, -d), {"layer": layer, "step": step, "filter": f, "sort": top_concentration},
            f"recall loss significant at α = {alpha:g} after Benjamini–Hochberg over {len(candidates)} one-class filters"))
    return out


# -- activity on errors --------------------------------------------------------------------


def fires_on_errors(profiles: Mapping[str, np.ndarray], correct: np.ndarray, alpha: float, step: int,
                    act_errors: Mapping[str, np.ndarray], act_correct: Mapping[str, np.ndarray],
                    sort: str) -> list[dict[str, Any]]:
    """`fires_on_errors`: per filter, a one-sided Mann–Whitney test that its mean activation on the
    profile's misclassified images exceeds that on correct ones (profiles: {layer: (F, P)}; correct
    (P,) bool), BH over every filter of the run, and AUC ≥ ERROR_AUC."""
    wrong = ~correct
    tested = []
    for layer, prof in profiles.items():
        prof = np.asarray(prof, np.float64)
        u, p = stats.mannwhitneyu(prof[:, wrong], prof[:, correct], alternative="greater", axis=1, method="asymptotic")
        auc = u / (wrong.sum() * correct.sum())
        tested.append((layer, np.nan_to_num(p, nan=1.0), auc))
    if not tested:
        return []
    adjusted = benjamini_hochberg(np.concatenate([p for _, p, _ in tested]))
    out = []
    at = 0
    total = len(adjusted)
    for layer, p, auc in tested:
        adj = adjusted[at : at + len(p)]
        at += len(p)
        for f in np.flatnonzero((adj <= alpha) & (auc >= ERROR_AUC)):
            e, c = float(act_errors[layer][f]), float(act_correct[layer][f])
            out.append(finding(
                "fires_on_errors", layer, [int(f)], [],
                f"{layer} filter {f}: more active on misclassified probe images (AUC {auc[f]:.2f}; mean {e:.3g} on "
                f"errors vs {c:.3g} on correct)",
                {"auc": float(auc[f]), "p_value": float(p[f]), "p_adjusted_run": float(adj[f]), "act_on_errors": e,
                 "act_on_correct": c, "errors": int(wrong.sum()), "correct": int(correct.sum())},
                (float(auc[f]) - ERROR_AUC) / (1 - ERROR_AUC), {"layer": layer, "step": step, "filter": int(f), "sort": sort},
                f"significant at α = {alpha:g} after Benjamini–Hochberg over {total} filters; "
                f"{int(wrong.sum())} errors vs {int(correct.sum())} correct images"))
    return out


# -- weights: dead, duplicate, kernel size -------------------------------------------------


def pruning_savings(filters: int, in_per_group: int, kernel: Sequence[int], positions: Optional[int],
                    next_layer: Optional[Mapping[str, Any]], count: int) -> dict[str, Any]:
    """Parameters and multiply–adds `count` filters cost in their layer and, as input channels, in
    the next layer that reads them (`next_layer`: filters, in_per_group, groups, kernel_size,
    positions, name; None when unknown). Positions are output positions on the probe's image size."""
    per_filter = in_per_group * math.prod(kernel) + 1  # + its bias (or BatchNorm shift)
    out: dict[str, Any] = {"params": count * per_filter, "macs": count * in_per_group * math.prod(kernel) * positions
                           if positions else None, "next_layer": None}
    if next_layer is not None:
        per_channel = next_layer["filters"] // next_layer["groups"] * math.prod(next_layer["kernel_size"])
        out["next_layer"] = next_layer["name"]
        out["next_params"] = count * per_channel
        out["next_macs"] = count * per_channel * next_layer["positions"] if next_layer.get("positions") else None
    return out


def _saving_words(s: Mapping[str, Any]) -> str:
    words = f"{s['params']:,} parameters"
    if s.get("macs"):
        words += f" and {s['macs']:,} multiply–adds a probe image"
    if s.get("next_layer"):
        words += f" here, {s['next_params']:,} parameters in {s['next_layer']}"
    return words


def dead_findings(layer: str, dead: np.ndarray, savings: Mapping[str, Any], step: int, sort: str) -> list[dict[str, Any]]:
    found = np.flatnonzero(np.asarray(dead).astype(bool))
    if not len(found):
        return []
    shown = ", ".join(map(str, found[:12])) + (" …" if len(found) > 12 else "")
    return [finding("dead", layer, found.tolist(), [],
                    f"{layer}: {len(found)} of {len(dead)} filters {'is' if len(found) == 1 else 'are'} dead ({shown}); "
                    f"pruning {'it' if len(found) == 1 else 'them'} saves {_saving_words(savings)}",
                    {"dead": len(found), "filters_in_layer": len(dead), **savings}, len(found) / len(dead),
                    {"layer": layer, "step": step, "filter": int(found[0]), "sort": sort},
                    "exact: the logged kernel norms")]


def duplicate_pairs(kernels: np.ndarray, groups: int = 1, alive: Optional[np.ndarray] = None) -> list[tuple[int, int, float]]:
    """(i, j, cosine) of filters i < j of one group whose kernels' cosine exceeds DUPLICATE_COS,
    most alike first. Row chunks keep memory at ~16M floats whatever the width."""
    w = np.asarray(kernels, np.float32).reshape(len(kernels), -1)
    norm = np.linalg.norm(w, axis=1)
    live = norm > 0 if alive is None else (np.asarray(alive, bool) & (norm > 0))
    unit = np.where(live[:, None], w / np.maximum(norm, 1e-30)[:, None], 0.0).astype(np.float32)
    count = len(w)
    group = np.arange(count) // max(count // groups, 1)
    step = max(1, (1 << 24) // max(count, 1))
    found = []
    for start in range(0, count, step):
        cos = unit[start : start + step] @ unit.T
        rows, cols = np.nonzero(cos > DUPLICATE_COS)
        rows += start
        keep = (cols > rows) & (group[rows] == group[cols])
        found.extend(zip(rows[keep].tolist(), cols[keep].tolist(), cos[rows[keep] - start, cols[keep]].tolist()))
    return sorted(found, key=lambda t: -t[2])


def duplicate_findings(layer: str, pairs: Sequence[tuple[int, int, float]], savings_one: Mapping[str, Any], step: int,
                       sort: str) -> list[dict[str, Any]]:
    return [finding("duplicate", layer, [i, j], [],
                    f"{layer}: filter {j} duplicates filter {i} (kernel cosine {cos:.3f}); pruning one saves "
                    f"{_saving_words(savings_one)}", {"pair": [i, j], "cosine": cos, **savings_one},
                    (cos - DUPLICATE_COS) / (1 - DUPLICATE_COS), {"layer": layer, "step": step, "filter": j, "sort": sort},
                    "exact on the logged kernels (8-bit, within (max − min)/510 per filter)")
            for i, j, cos in pairs]


def kernel_size_finding(layer: str, kernel: Sequence[int], ring_energy: np.ndarray, params: int, kernel_step: int,
                        step: int) -> list[dict[str, Any]]:
    """`kernel_size`: the smallest kernel keeping ≥ KEEP_ENERGY of the layer's energy, if smaller."""
    kept = np.cumsum(np.asarray(ring_energy, np.float64))[:-1]
    smaller = np.flatnonzero(kept >= KEEP_ENERGY)
    if not smaller.size:
        return []
    ring = int(smaller[0])
    size = _kept_size(tuple(kernel), ring)
    saved = params * (1 - math.prod(size) / math.prod(kernel))
    return [finding("kernel_size", layer, [], [],
                    f"{layer}: a {_size_name(size)} kernel keeps {math.floor(kept[ring] * 1000) / 10:g}% of this "
                    f"{_size_name(tuple(kernel))} layer's energy (about {int(saved):,} fewer parameters)",
                    {"kernel_size": list(kernel), "smaller": list(size), "energy_kept": float(kept[ring]),
                     "ring_energy": ring_energy, "kernel_step": kernel_step, "params_saved": int(saved)},
                    (kept[ring] - KEEP_ENERGY) / (1 - KEEP_ENERGY), {"layer": layer, "step": step},
                    "exact on the logged kernels; energy is not accuracy: retrain with the smaller kernel to confirm")]


# -- perturbations: shortcut, unstable, texture ---------------------------------------------


def _shortcut_strength(by_edit: Mapping[str, Mapping[str, float]], edits: int) -> float:
    """Half for the share of the logged edits that flag the filter (one that both a "remove" and an
    "add" edit flag detects the cue itself, not the contrast an edit adds), half for its largest
    change (a change of 50% or more counts fully): the marker detector before the edge detectors
    that merely see a new corner."""
    change = max(abs(e["change"]) for e in by_edit.values())
    return 0.5 * len(by_edit) / max(edits, 1) + 0.5 * min(1.0, change / 0.5)


def _outlier_strength(z: float) -> float:
    """0 at the flag's threshold, 1 at 100× it: robust z-scores span decades when the layer's MAD is small."""
    return float(np.clip(math.log10(max(z, ROBUST_Z_FLAG) / ROBUST_Z_FLAG) / 2, 0.0, 1.0))


def shortcut_findings(layer: str, edits: Mapping[str, Mapping[str, np.ndarray]], step: int,
                      pushed: Mapping[int, tuple[Optional[int], int]], sort_of: Mapping[str, str]) -> list[dict[str, Any]]:
    """`shortcut`: filters any counterfactual flags; `edits`: {edit: {"change", "z", "flag", "cosine", "q"}},
    `pushed`: {filter: (class zeroing it moves predictions away from, how many)}; sort_of: edit → column."""
    flagged: dict[int, dict[str, dict[str, float]]] = {}
    for edit, a in edits.items():
        for f in np.flatnonzero(np.asarray(a["flag"]).astype(bool)):
            flagged.setdefault(int(f), {})[edit] = {"change": float(a["change"][f]), "z": float(a["z"][f]),
                                                   "map_cosine": float(a["cosine"][f]) if "cosine" in a else float("nan"),
                                                   "q": float(a["q"][f]) if "q" in a else float("nan")}
    out = []
    for f, by_edit in flagged.items():
        edit = max(by_edit, key=lambda e: by_edit[e]["z"])
        cls, moved = pushed.get(f, (None, 0))
        towards = (f"; zeroing it moves {moved} probe prediction{'s' if moved != 1 else ''} away from class {cls}"
                   if cls is not None else "")
        out.append(finding(
            "shortcut", layer, [f], [cls] if cls is not None else [],
            f"{layer} filter {f}: " + " and ".join(
                f"{e!r} changes its activation by {_pct(v['change'])} (robust z {v['z']:.3g} in its layer)"
                for e, v in sorted(by_edit.items(), key=lambda kv: -kv[1]["z"])) + towards,
            {"edits": by_edit, "pushes_towards": cls, "predictions_moved": moved},
            _shortcut_strength(by_edit, len(edits)), {"layer": layer, "step": step, "filter": f, "sort": sort_of[edit]},
            # Flags logged since the paired test over probe images carry its q; older ones are z alone.
            "flagged by a paired t test over the probe images (BH q ≤ 0.05 in the layer) and an outlier rule "
            "within the layer: check the filter's top examples" if all(np.isfinite(v["q"]) for v in by_edit.values())
            else "an outlier rule within the layer, not a significance test: check the filter's top examples"))
    return out


def unstable_findings(layer: str, stability: Optional[np.ndarray], fgsm: Optional[np.ndarray], step: int,
                      sorts: tuple[str, str]) -> list[dict[str, Any]]:
    """`unstable`: noise instability or FGSM change that is a robust outlier (z > 3.5) of the layer."""
    scores = {}
    if stability is not None:
        scores["noise"] = (1 - np.asarray(stability, np.float64).reshape(len(stability), -1).mean(1), sorts[0])
    if fgsm is not None:
        scores["fgsm"] = (np.asarray(fgsm, np.float64), sorts[1])
    out = []
    for what, (values, sort) in scores.items():
        if len(values) < UNSTABLE_MIN_FILTERS or not np.isfinite(values).all():
            continue
        z = robust_z(torch.as_tensor(values)).numpy()
        for f in np.flatnonzero((z > ROBUST_Z_FLAG) & (values >= UNSTABLE_RATIO * np.median(values))):
            words = (f"noise instability {values[f]:.3f} (1 − map cosine under noise)" if what == "noise"
                     else f"FGSM activation change {values[f]:.3g}")
            out.append(finding(
                "unstable", layer, [int(f)], [], f"{layer} filter {f}: {words}, robust z {z[f]:.3g} in its layer "
                f"(median {np.median(values):.3g})", {"measure": what, "value": float(values[f]), "z": float(z[f]),
                                                      "layer_median": float(np.median(values))},
                _outlier_strength(float(z[f])), {"layer": layer, "step": step, "filter": int(f), "sort": sort},
                "an outlier rule within the layer, not a significance test"))
    return out


def texture_findings(index: Mapping[str, np.ndarray], alpha: float, step: int, sort: str) -> list[dict[str, Any]]:
    """`texture`: layers whose filters' shape–texture index has median ≤ TEXTURE_INDEX, with a
    one-sided Wilcoxon signed-rank test that it sits below 0, BH over the layers."""
    tested = []
    for layer, values in index.items():
        v = np.asarray(values, np.float64)
        v = v[np.isfinite(v)]
        if len(v) < 6 or not np.any(v):
            continue
        p = float(stats.wilcoxon(v, alternative="less").pvalue)
        tested.append((layer, v, p))
    if not tested:
        return []
    adjusted = benjamini_hochberg(np.array([p for *_, p in tested]))
    out = []
    for (layer, v, p), q in zip(tested, adjusted):
        med = float(np.median(v))
        if q > alpha or med > TEXTURE_INDEX:
            continue
        out.append(finding("texture", layer, [], [], f"{layer}: its filters lean on texture (median shape–texture "
                           f"index {med:+.2f} over {len(v)} filters; −1 texture only, +1 shape only)",
                           {"median_index": med, "filters": len(v), "p_value": p, "p_adjusted": float(q)},
                           min(1.0, -med), {"layer": layer, "step": step, "sort": sort},
                           f"Wilcoxon signed-rank, significant at α = {alpha:g} after Benjamini–Hochberg over {len(tested)} layers"))
    return out


def settled_findings(steps: Sequence[int], cka: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                     step: int) -> list[dict[str, Any]]:
    """`settled`: layers whose CKA to the final step stays ≥ SETTLED_CKA from an early step on.
    cka: {layer: (value, lo, hi)} each (S,) over `steps` (NaN where not logged), the last the final."""
    out = []
    last = len(steps) - 1
    for layer, (value, lo, hi) in cka.items():
        v = np.asarray(value, np.float64)[:last]
        if len(v) < 2:
            continue
        ok = np.isfinite(v) & (v >= SETTLED_CKA)
        if not ok[-1]:
            continue
        first = last - int(np.argmin(ok[::-1])) if not ok.all() else 0
        if first > SETTLED_BY * last:
            continue
        out.append(finding("settled", layer, [], [],
                           f"{layer}: CKA with the final step ≥ {SETTLED_CKA} from step {steps[first]} on "
                           f"({v[first]:.3f} [{lo[first]:.3f}, {hi[first]:.3f}] there; final step {steps[last]})",
                           {"from_step": steps[first], "cka": float(v[first]), "cka_ci": [float(lo[first]), float(hi[first])],
                            "steps": list(steps), "curve": np.asarray(value)},
                           1 - first / max(last, 1), {"layer": layer, "step": step},
                           "debiased CKA with a delete-one jackknife interval over the probe images"))
    return out


def rank(findings: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Findings by severity (highest first), at most MAX_PER_KIND per kind; and how many each kind had."""
    counts: dict[str, int] = {}
    for f in findings:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    kept: dict[str, int] = {}
    out = []
    for f in sorted(findings, key=lambda f: -f["severity"]):
        if kept.get(f["kind"], 0) < MAX_PER_KIND:
            kept[f["kind"]] = kept.get(f["kind"], 0) + 1
            out.append(f)
    return out, counts
