"""Findings of a run at a step, read from its logs: gathers the arrays the rules of
`analysis/findings.py` need, layer by layer, and says which kinds cannot be found and why.

Everything is read at or before the step asked (full kernels and a large model's responses are
not logged every step). Costs stay per filter or per flip, never filters × classes: per-class
effects come from the sparse flips, and pairwise kernel cosines are chunked per layer.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from tb_convviz._version import __version__
from tb_convviz.analysis import findings as rules
from tb_convviz.analysis.significance import examples_needed
from tb_convviz.read.reader import ConvVizReader, NotFound, cka_to_last
from tb_convviz.schema import format as fmt
from tb_convviz.schema import records


def last_step(reader: ConvVizReader, run: str) -> int:
    """The run's last logged step (any layer)."""
    return max(reader.steps(run, layer)[-1] for layer in reader.layers(run))


Kinds = dict[str, list[str]]  # {layer: its record kinds}, listed once per answer


def _record(reader: ConvVizReader, run: str, layer: str, kind: str, step: int, kinds: Kinds) -> Optional[fmt.Bundle]:
    """The layer's last `kind` record at or before `step`, or None."""
    if kind not in kinds.get(layer, ()):
        return None
    try:
        return reader.bundle(run, layer, kind, reader.latest_at_or_before(run, layer, kind, step))
    except NotFound:
        return None


class _Unavailable:
    """Kinds that could not be looked for, each with why and the option that enables it."""

    def __init__(self) -> None:
        self.reasons: dict[str, tuple[str, str]] = {}

    def add(self, kind: str, reason: str, enable: Optional[str] = None) -> None:
        """`enable`: what would let the kind be looked for, when not the option that logs it."""
        self.reasons.setdefault(kind, (reason, enable or rules.KIND_BY_NAME[kind].enable))

    def listed(self) -> list[dict[str, str]]:
        return [{"kind": k, "reason": why, "enable": enable} for k, (why, enable) in self.reasons.items()]


def run_findings(reader: ConvVizReader, run: str, step: Optional[int] = None) -> dict[str, Any]:
    """Everything a user should look at in `run` at `step` (None: its last step):
    {"run", "step", "findings" (ranked, see analysis.findings), "counts" {kind: found}, "unavailable"
    [{kind, reason, enable}], "kinds" (the declarations), "probe" {n, labelled, classes, support},
    "alpha", "version"}."""
    layers = reader.layers(run)
    if step is None:
        step = last_step(reader, run)
    infos = {layer: reader.bundle(run, layer, fmt.KIND_FILTERS).meta["info"] for layer in layers}
    kinds = reader.layer_kinds(run)
    labels = None
    try:
        labels = reader.probe_labels(run)
    except NotFound:
        pass
    missing = _Unavailable()
    found: list[dict[str, Any]] = []

    impacts = {layer: b for layer in layers if (b := _record(reader, run, layer, fmt.KIND_IMPACT, step, kinds)) is not None}
    # stored as float32: 0.05 reads back as 0.0500000007
    alpha = round(records.impact_alpha(next(iter(impacts.values()))), 6) if impacts else 0.05
    probe = _probe_summary(reader, run, labels)
    # decoded once: the impact and the shortcut rules both read them
    arrays = {layer: records.impact_arrays(b, labels) for layer, b in impacts.items()} if labels is not None else {}
    found += _impact_findings(step, arrays, labels, alpha, missing)
    perturbations = {layer: b for layer in layers if (b := _record(reader, run, layer, fmt.KIND_PERTURBATION, step, kinds)) is not None}
    found += _perturbation_findings(step, perturbations, arrays, alpha, missing)
    found += _weight_findings(reader, run, step, layers, infos, missing, kinds)
    found += _settled(reader, run, step, missing)
    ranked, counts = rules.rank(found)
    for kind in rules.KINDS:
        if kind.name not in counts and kind.name not in missing.reasons:
            counts[kind.name] = 0
    return {"run": run, "step": step, "findings": ranked, "counts": counts, "unavailable": missing.listed(),
            "kinds": [k.declaration() for k in rules.KINDS], "probe": probe, "alpha": alpha, "version": __version__,
            "layers": len(layers), "filters": int(sum(i["filters"] for i in infos.values()))}


def _probe_summary(reader: ConvVizReader, run: str, labels: Optional[np.ndarray]) -> dict[str, Any]:
    try:
        n = int(reader.bundle(run, fmt.RUN_LAYER, fmt.KIND_RUN).shape(records.PROBE_IMAGES)[0])
    except (NotFound, KeyError):
        n = None
    out: dict[str, Any] = {"n": n if n is not None else (len(labels) if labels is not None else None), "labelled": labels is not None}
    if labels is not None:
        classes, support = np.unique(labels, return_counts=True)
        out.update(classes=classes.tolist(), support=support.tolist())
    return out


def _impact_findings(step: int, arrays: dict[str, dict[str, np.ndarray]], labels: Optional[np.ndarray],
                     alpha: float, missing: _Unavailable) -> list[dict[str, Any]]:
    ablation = ("needed", "harmful", "fragile_class", "class_detector", "fires_on_errors")
    if not arrays or labels is None:
        why = "the run was logged without impact" if labels is not None else "the probe has no labels"
        for kind in ablation:
            missing.add(kind, why)
        return []
    small = rules.probe_too_small(len(labels), alpha)
    exact_layers = [rules.LayerImpact(layer, a) for layer, a in arrays.items()
                    if records.IMPACT_CLEAN_PRED in a and np.asarray(a[records.IMPACT_EXACT]).any()]
    out: list[dict[str, Any]] = []
    if small is not None:
        larger = f"a labelled probe of ≥ {examples_needed(rules.TARGET_EFFECT, alpha)} images: probe=(images, labels)"
        for kind in ("needed", "harmful", "fragile_class", "class_detector"):
            missing.add(kind, small, larger)
    elif not exact_layers:
        for kind in ("needed", "harmful", "fragile_class", "class_detector"):
            missing.add(kind, "no filter was ablated exactly at this step", 'impact={"exact_budget": …} or {"exact": "all"}')
    else:
        out += rules.ablation_findings(exact_layers, labels, alpha, step)
        out += rules.fragile_classes(exact_layers, labels, alpha, step)
        out += rules.class_detectors(exact_layers, labels, alpha, step)
    out += _errors(arrays, labels, alpha, step, missing)
    return out


def _errors(arrays: dict[str, dict[str, np.ndarray]], labels: np.ndarray, alpha: float, step: int,
            missing: _Unavailable) -> list[dict[str, Any]]:
    """`fires_on_errors` from the rank test each impact record holds over the probe images (each
    layer's own record: a large model's layers may hold records of different steps)."""
    tested = {layer: a for layer, a in arrays.items() if rules.ERRORS_P in a and records.IMPACT_CLEAN_PRED in a}
    if not tested:
        missing.add("fires_on_errors", "the impact records hold no test of activity on errors (logged by an "
                                       "earlier version)", "impact=True, logged again")
        return []
    counts = {}
    for layer, a in tested.items():
        right = np.asarray(a[records.IMPACT_CLEAN_PRED]) == labels
        counts[layer] = (int((~right).sum()), int(right.sum()))
    enough = {layer: a for layer, a in tested.items() if min(counts[layer]) >= rules.MIN_GROUP}
    if not enough:
        errors, correct = next(iter(counts.values()))
        missing.add("fires_on_errors", f"the {len(labels)} probe images hold {errors} misclassified and {correct} correct "
                                       f"ones: the rank test needs ≥ {rules.MIN_GROUP} of each",
                    "a labelled probe with both errors and correct images")
        return []
    return rules.fires_on_errors(enough, {layer: counts[layer] for layer in enough}, alpha, step, rules.ERRORS_AUC)


def _perturbation_findings(step: int, perturbations: dict[str, fmt.Bundle], impacts: dict[str, dict[str, np.ndarray]],
                           alpha: float, missing: _Unavailable) -> list[dict[str, Any]]:
    if not perturbations:
        for kind in ("shortcut", "unstable", "texture"):
            missing.add(kind, "the run was logged without perturbation responses")
        return []
    out: list[dict[str, Any]] = []
    textures: dict[str, np.ndarray] = {}
    edits_seen = False
    for layer, b in perturbations.items():
        names = b.names()
        edits = sorted({n[len(fmt.COUNTERFACTUAL_PREFIX):].split("/")[0] for n in names if n.startswith(fmt.COUNTERFACTUAL_PREFIX)})
        if edits:
            edits_seen = True
            by_edit = {}
            for e in edits:
                key = fmt.COUNTERFACTUAL_PREFIX + e
                by_edit[e] = {"change": b.array(key), "z": b.array(key + "/z"), "flag": b.array(key + "/flag")}
                for field in ("cosine", "q"):  # q: the flag's test over probe images, in logs since it was
                    if f"{key}/{field}" in b:
                        by_edit[e][field] = b.array(f"{key}/{field}")
            pushed = {}
            if layer in impacts:
                a = impacts[layer]
                flagged = {int(f) for e in by_edit.values() for f in np.flatnonzero(np.asarray(e["flag"]).astype(bool))}
                exact = np.asarray(a.get(records.IMPACT_EXACT, []), bool)
                for f in flagged:
                    if records.IMPACT_CLEAN_PRED in a and f < len(exact) and exact[f]:
                        pushed[f] = rules.pushed_class(a[records.IMPACT_CLEAN_PRED], *(a[k] for k in records.IMPACT_FLIPS), f)
            out += rules.shortcut_findings(layer, by_edit, step, pushed, {e: fmt.COUNTERFACTUAL_PREFIX + e for e in edits})
        stability = b.array(rules.STABILITY) if rules.STABILITY in b else None
        fgsm = b.array(rules.FGSM) if rules.FGSM in b else None
        out += rules.unstable_findings(layer, stability, fgsm, step, (rules.STABILITY, rules.FGSM))
        if fmt.SHAPE_TEXTURE_INDEX in b:
            textures[layer] = b.array(fmt.SHAPE_TEXTURE_INDEX)
    if not edits_seen:
        missing.add("shortcut", "no counterfactual edit was logged: test a suspected cue with an edit that removes or adds it")
    if textures:
        out += rules.texture_findings(textures, alpha, step, fmt.SHAPE_TEXTURE_INDEX)
    else:
        missing.add("texture", "shape–texture responses were not logged")
    return out


def _positions(reader: ConvVizReader, run: str, layer: str, step: int, kinds: Kinds) -> Optional[int]:
    """Output positions of the layer on one probe image (its maps record's full-resolution
    spatial shape), or None."""
    b = _record(reader, run, layer, fmt.KIND_MAPS, step, kinds)
    shape = b.meta.get("source_shape") if b is not None else None
    return int(math.prod(shape)) if isinstance(shape, list) and shape else None


def _next_layer(layers: list[str], infos: dict[str, dict], layer: str) -> Optional[str]:
    """The next conv in model order that takes this layer's filters as its input channels (a guess
    in a branching model: the logs do not keep the graph)."""
    filters = infos[layer]["filters"]
    for other in layers[layers.index(layer) + 1 :]:
        info = infos[other]
        if info["in_per_group"] * info["groups"] == filters and not info.get("transposed"):
            return other
    return None


def _weight_findings(reader: ConvVizReader, run: str, step: int, layers: list[str], infos: dict[str, dict],
                     missing: _Unavailable, kinds: Kinds) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    kernels_seen = False
    positions: dict[str, Optional[int]] = {}

    def savings(layer: str, count: int) -> dict[str, Any]:
        info = infos[layer]
        nxt = _next_layer(layers, infos, layer)
        for name in (layer, nxt):
            if name is not None and name not in positions:
                positions[name] = _positions(reader, run, name, step, kinds)
        next_info = {**infos[nxt], "name": nxt, "positions": positions[nxt]} if nxt is not None else None
        return rules.pruning_savings(info["filters"], info["in_per_group"], info["kernel_size"], positions[layer], next_info, count)

    for layer in layers:
        info = infos[layer]
        stats = _record(reader, run, layer, fmt.KIND_FILTERS, step, kinds)
        dead = stats.array(records.DEAD).astype(bool) if stats is not None and records.DEAD in stats else np.zeros(0, bool)
        if dead.any():
            out += rules.dead_findings(layer, dead, savings(layer, int(dead.sum())), step, rules.L2)
        kernels = _record(reader, run, layer, fmt.KIND_KERNELS, step, kinds)
        if kernels is None:
            continue
        kernels_seen = True
        try:
            foot = reader.footprint(run, layer, step)
        except NotFound:
            foot = None
        # The footprint logged with the kernels counts near-duplicate pairs (|cos| > 0.95, a superset
        # of ours): where it found none, the kernels need not be decoded and compared again.
        if foot is None or foot.get(rules.DUPLICATE_PAIR_COUNT, 1) > 0:
            w = fmt.effective_kernel(kernels)
            w = kernels.array(records.KERNEL) if w is None else w
            pairs = rules.duplicate_pairs(w, info["groups"], ~dead if len(dead) == len(w) else None)
            if pairs:
                out += rules.duplicate_findings(layer, pairs[: rules.MAX_PER_KIND], savings(layer, 1), step, rules.L2)
        if foot is not None:
            params = info["filters"] * info["in_per_group"] * math.prod(info["kernel_size"])
            out += rules.kernel_size_finding(layer, info["kernel_size"], foot[rules.RING_ENERGY], params, foot["step"], step)
    if not kernels_seen:
        for kind in ("duplicate", "kernel_size"):
            missing.add(kind, "no full kernels were logged at or before this step")
    return out


def _settled(reader: ConvVizReader, run: str, step: int, missing: _Unavailable) -> list[dict[str, Any]]:
    try:
        series = [(s, b) for s, b in reader.bundles(run, fmt.RUN_LAYER, fmt.KIND_GRAM) if s <= step]
    except NotFound:
        series = []
    if len(series) < 3:
        missing.add("settled", f"CKA to the final step needs Gram matrices at ≥ 3 steps up to this one ({len(series)} logged)")
        return []
    cka = {layer: (found.value, found.lo, found.hi) for layer, found in cka_to_last(series, reader.layers(run)).items()}
    return rules.settled_findings([s for s, _ in series], cka, step)
