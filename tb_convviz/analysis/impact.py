"""What each conv filter does for the model's decisions on the labelled probe.

Exact ablation (the filter's output channel zeroed) gives the change in accuracy, true-class
confidence and loss, and which predictions flipped to what — from which per-class recall and
precision changes follow exactly (per_class_deltas), so no record grows with filters × classes.
A first-order Taylor estimate of the loss change from one backward pass covers every filter and
is checked against the exact result by rank correlation; where exact ablation of a whole layer
would exceed a budget, only the top-Taylor filters and a random sample are ablated. Class
selectivity, activation on errors vs correct examples and the top-k activating probe examples
describe what the filter responds to. Sign convention: every Δ is ablated − clean,
so a filter the model needs has negative Δaccuracy and positive Δloss.
"""
from __future__ import annotations

from typing import Iterable, Literal, Mapping, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz.analysis.ablation import FilterAblation, Method
from tb_convviz.analysis.significance import detectable_effect, recall_delta_ci, significance
from tb_convviz.analysis.turns import layer_turns
from tb_convviz.model.capture import as_model_input, run_with_hooks
from tb_convviz.model.layers import unwrap

Arrays = dict[str, dict[str, np.ndarray]]

# False-discovery rate of the significance flag unless the user sets `alpha`.
DEFAULT_ALPHA = 0.05
TOPK_CONCENTRATED = 0.9  # a filter whose top-k examples are ≥ 90 % one class looks like a class (or shortcut) detector
SAMPLE_MIN = 32  # filters per layer ablated at random beyond the top-Taylor ones, on its calibration turn
# At most this share of the exact budget goes to random calibration samples at one log: layers take
# turns at them (analysis.turns), so a ResNet-50's 53 layers do not each sample every log.
CALIBRATION_SHARE = 0.25


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two (n,) arrays, ties given their average rank; NaN if either is constant."""

    def ranks(v: np.ndarray) -> np.ndarray:
        v = np.asarray(v, dtype=np.float64)
        order = np.argsort(v, kind="mergesort")
        r = np.empty(len(v))
        r[order] = np.arange(len(v), dtype=np.float64)
        _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=r)
        return sums[inverse] / counts[inverse]

    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra**2).sum() * (rb**2).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def ablation_metrics(
    clean: torch.Tensor, y: torch.Tensor, filters: int, passes: Iterable[tuple[Sequence[int], torch.Tensor]]
) -> dict[str, np.ndarray]:
    """Decision changes from clean logits (N, K), labels (N,) and the ablated logits of some of a
    layer's `filters`, streamed as passes (filter ids, logits (len, N, K)); nothing is kept per class.

    Keys: "accuracy" () clean accuracy; "clean_pred" (N,) int; "exact" (filters,) bool, ablated
    here; per filter (NaN / −1 where not ablated): "d_accuracy", "d_confidence" (change of mean
    softmax probability of the true class), "d_loss" (change of mean cross-entropy) (F,) float,
    "flips" (F,) int, predictions that changed class, "discordant" (F, 2) int, images going
    (correct → wrong, wrong → correct); and the flips themselves, sorted by filter then image:
    "flip_filter", "flip_image", "flip_pred" (M,) int, the ablated prediction. Per-class recall
    and precision changes follow exactly from these (per_class_deltas).
    """
    clean, y = clean.float(), y.to(clean.device)
    n = y.shape[0]
    clean_pred = clean.argmax(1)
    clean_right = clean_pred == y
    clean_conf = clean.softmax(1).gather(1, y[:, None])[:, 0]
    clean_loss = F.cross_entropy(clean, y, reduction="none")
    out: dict[str, np.ndarray] = {
        "accuracy": np.asarray(float(clean_right.float().mean())),
        "clean_pred": clean_pred.cpu().numpy().astype(np.int64),
        "exact": np.zeros(filters, dtype=bool),
        "d_accuracy": np.full(filters, np.nan, dtype=np.float32),
        "d_confidence": np.full(filters, np.nan, dtype=np.float32),
        "d_loss": np.full(filters, np.nan, dtype=np.float32),
        "flips": np.full(filters, -1, dtype=np.int64),
        "discordant": np.full((filters, 2), -1, dtype=np.int64),
    }
    flip_parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for fs, logits in passes:
        idx = np.asarray(fs, dtype=np.int64)
        logits = logits.float()
        pred = logits.argmax(-1)  # (B, N)
        right = pred == y
        conf = logits.softmax(-1).gather(-1, y.expand(len(idx), n)[..., None])[..., 0]
        loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(len(idx)), reduction="none").view(len(idx), n)
        changed = pred != clean_pred
        out["exact"][idx] = True
        out["d_accuracy"][idx] = ((right.sum(1) - clean_right.sum()).float() / n).cpu().numpy()
        out["d_confidence"][idx] = (conf - clean_conf).mean(1).cpu().numpy()
        out["d_loss"][idx] = (loss - clean_loss).mean(1).cpu().numpy()
        out["flips"][idx] = changed.sum(1).cpu().numpy()
        out["discordant"][idx] = torch.stack([(clean_right & ~right).sum(1), (~clean_right & right).sum(1)], 1).cpu().numpy()
        rows, images = torch.nonzero(changed, as_tuple=True)
        flip_parts.append((idx[rows.cpu().numpy()], images.cpu().numpy(), pred[rows, images].cpu().numpy()))
    flip_filter, flip_image, flip_pred = (
        (np.concatenate(p).astype(np.int64) for p in zip(*flip_parts)) if flip_parts else (np.zeros(0, np.int64),) * 3
    )
    order = np.lexsort((flip_image, flip_filter))
    out.update(flip_filter=flip_filter[order], flip_image=flip_image[order], flip_pred=flip_pred[order])
    return out


def per_class_deltas(
    labels: np.ndarray,
    clean_pred: np.ndarray,
    flip_filter: np.ndarray,
    flip_image: np.ndarray,
    flip_pred: np.ndarray,
    filters: Union[int, Sequence[int]],
) -> dict[str, np.ndarray]:
    """Per-class recall and precision changes, exactly, from the sparse flips of ablation_metrics.

    labels, clean_pred (N,) int; flips (M,) int. `filters`: an int F for rows 0..F−1, or the filter
    ids wanted, in order (one filter, or the exact ones: a filter without flips reads 0, so pass
    the record's exact filters to leave the others out). Costs O(M + rows × C), not filters × all classes.
    Keys: "classes" (C,) the class ids present in labels; "class_support" (C,) int, their
    images; "d_recall", "d_precision" (rows, C) float64, ablated − clean; "tp_clean" (C,) int;
    "recall_lost", "recall_gained" (rows, C) int, the class's images going correct → wrong and
    wrong → correct (a class's own McNemar table). A recall change is (gained − lost) / support;
    a class never predicted has precision 0.
    """
    labels, clean_pred = np.asarray(labels, np.int64), np.asarray(clean_pred, np.int64)
    flip_filter, flip_image, flip_pred = (np.asarray(a, np.int64) for a in (flip_filter, flip_image, flip_pred))
    classes, support = np.unique(labels, return_counts=True)
    ids = np.arange(filters) if isinstance(filters, (int, np.integer)) else np.asarray(filters, np.int64)
    by_id = np.argsort(ids, kind="stable")
    pos = np.minimum(np.searchsorted(ids[by_id], flip_filter), max(len(ids) - 1, 0))
    wanted = (ids[by_id][pos] == flip_filter) if len(ids) else np.zeros(len(flip_filter), bool)
    rows, images, new = by_id[pos[wanted]], flip_image[wanted], flip_pred[wanted]

    def class_index(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Index into classes of each value, and whether the value is one of the classes."""
        at = np.minimum(np.searchsorted(classes, values), len(classes) - 1)
        return at, classes[at] == values

    truth, _ = class_index(labels)
    before, before_ok = class_index(clean_pred)
    right = clean_pred == labels
    tp = np.bincount(truth[right], minlength=len(classes))
    predicted = np.bincount(before[before_ok], minlength=len(classes))
    lost = np.zeros((len(ids), len(classes)), np.int64)
    gained = np.zeros_like(lost)
    d_predicted = np.zeros_like(lost)
    now_right = new == labels[images]
    np.add.at(lost, (rows, truth[images]), (right[images] & ~now_right).astype(np.int64))
    np.add.at(gained, (rows, truth[images]), (~right[images] & now_right).astype(np.int64))
    d_tp = gained - lost
    old_ok, new_at, new_ok = before_ok[images], *class_index(new)
    np.add.at(d_predicted, (rows[old_ok], before[images][old_ok]), -1)
    np.add.at(d_predicted, (rows[new_ok], new_at[new_ok]), 1)
    precision = tp / np.maximum(predicted, 1)
    return {
        "classes": classes,
        "class_support": support.astype(np.int64),
        "d_recall": d_tp / support,
        "d_precision": (tp + d_tp) / np.maximum(predicted + d_predicted, 1) - precision,
        "tp_clean": tp.astype(np.int64),
        "recall_lost": lost,
        "recall_gained": gained,
    }


def exact_plan(taylor: Mapping[str, np.ndarray], costs: Mapping[str, float], budget: float, log_index: int,
               rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per layer, which filters to ablate exactly and which of them form an unbiased check of the
    Taylor estimate: ((F,) chosen, (F,) sampled), spending at most `budget` forward passes in all
    (`costs`: one filter's ablation, in forward passes).

    A layer whose whole ablation fits an equal share of the budget is ablated whole (every filter
    is then its own check). The others take turns at a random calibration sample (SAMPLE_MIN
    filters, drawn by `rng`), a turn's samples costing at most CALIBRATION_SHARE of the budget;
    what is left goes, in equal shares, to each one's largest |Taylor Δloss| filters.
    """
    if budget <= 0:  # e.g. the first log's replay checks took it all: the Taylor estimate alone
        return {name: (np.zeros(len(t), bool), np.zeros(len(t), bool)) for name, t in taylor.items()}
    share = budget / max(len(taylor), 1)
    whole = [name for name, t in taylor.items() if len(t) * costs[name] <= share]
    partial = [name for name in taylor if name not in whole]
    left = budget - sum(len(taylor[name]) * costs[name] for name in whole)
    sample_cap = CALIBRATION_SHARE * budget
    sample_cost = {name: min(SAMPLE_MIN, len(taylor[name])) * costs[name] for name in partial}
    turns = layer_turns(sample_cost, sample_cap) if partial else [[]]
    calibrating = set(turns[log_index % len(turns)])
    sizes = {name: min(SAMPLE_MIN, len(taylor[name]), int(sample_cap // costs[name])) for name in calibrating}
    left -= sum(sizes[name] * costs[name] for name in calibrating)
    top_share = max(left, 0.0) / max(len(partial), 1)
    out = {}
    for name, t in taylor.items():
        f = len(t)
        if name in whole:
            out[name] = (np.ones(f, bool), np.ones(f, bool))
            continue
        chosen, sampled = np.zeros(f, bool), np.zeros(f, bool)
        count = sizes.get(name, 0)
        top = min(f - count, int(top_share // costs[name]))
        chosen[np.argsort(-np.abs(t), kind="stable")[:top]] = True
        if count:
            sampled[rng.choice(np.flatnonzero(~chosen), size=count, replace=False)] = True
        out[name] = (chosen | sampled, sampled)
    return out


def class_selectivity(scores: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Morcos et al. (2018): (μmax − μ−max)/(μmax + μ−max) per filter, from scores (N, F) ≥ 0 and labels (N,).

    μmax is the largest class-conditional mean, μ−max the mean of the other classes' means, over
    the classes present in the probe. 0: no class preference; 1: fires for one class only.
    Fewer than two classes present gives NaN; a filter silent on every class gives 0.
    """
    classes = torch.unique(y)
    if len(classes) < 2:
        return torch.full((scores.shape[1],), float("nan"))
    means = torch.stack([scores[y == c].mean(0) for c in classes])  # (C, F)
    top = means.max(0).values
    rest = (means.sum(0) - top) / (len(classes) - 1)
    total = top + rest
    return torch.where(total > 0, (top - rest) / total.clamp_min(1e-30), torch.zeros_like(total))


def top_activating(scores: torch.Tensor, y: torch.Tensor, k: int) -> dict[str, np.ndarray]:
    """The k probe examples with the highest score per filter, from scores (N, F) and labels (N,):
    "topk_index" (F, k) probe indices, best first, and `top_example_summary`'s keys."""
    k = min(k, scores.shape[0])
    idx = scores.topk(k, dim=0).indices.T.cpu().numpy().astype(np.int64)  # (F, k)
    return {"topk_index": idx, **top_example_summary(idx, y.cpu().numpy())}


def top_example_summary(index: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """What a filter's top examples (F, k) say of it, given the probe labels (N,): "topk_label"
    (F, k); "topk_class" (F,) their most common label (the smallest on a tie); "topk_concentration"
    (F,) its share of the k; "topk_flag" (F,) bool, concentration ≥ 0.9 (with k < 2 nothing is
    flagged: one example is always one class). Pure, so records keep only the indices and readers
    rebuild the rest from the probe labels."""
    top = np.asarray(labels, np.int64)[np.asarray(index, np.int64)]  # (F, k)
    filters, k = top.shape
    if k == 0:
        empty = np.zeros(filters)
        return {"topk_label": top, "topk_class": np.full(filters, -1, np.int64), "topk_concentration": empty,
                "topk_flag": np.zeros(filters, bool)}
    counts = (top[:, :, None] == top[:, None, :]).sum(2)  # (F, k): how often each entry's label occurs
    best = np.argmax(counts * (int(top.max()) + 1) - top, axis=1)  # most common, then smallest label
    rows = np.arange(filters)
    concentration = counts[rows, best] / k
    return {
        "topk_label": top,
        "topk_class": top[rows, best],
        "topk_concentration": concentration.astype(np.float32),
        "topk_flag": (concentration >= TOPK_CONCENTRATED) & (k >= 2),
    }


def taylor_activations(
    model: nn.Module, layers: Mapping[str, nn.Module], x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One forward and one torch.autograd.grad pass: logits (N, K), each layer's output a (N, F, *s)
    and the first-order estimate of Δ mean cross-entropy when each channel is zeroed, −Σ a·∂L/∂a (F,).

    The hook hands a copy downstream, so an in-place op after the conv can neither rewrite `a` nor
    break its gradient. Parameters' .grad are never written.
    """
    acts: dict[str, torch.Tensor] = {}

    def keep(name: str, out: torch.Tensor) -> torch.Tensor:
        acts[name] = out
        return out.clone()

    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)  # keeps a graph even when no parameter requires grad
        logits, _ = run_with_hooks(model, layers, xr, record=False, edit=keep)
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            raise ValueError("impact: the model must return class logits shaped (N, classes)")
        if int(y.min()) < 0 or int(y.max()) >= logits.shape[1]:
            raise ValueError(f"impact: labels must lie in [0, {logits.shape[1]}), got {int(y.min())}..{int(y.max())}")
        loss = F.cross_entropy(logits.float(), y)
        names = list(acts)
        grads = torch.autograd.grad(loss, [acts[n] for n in names], allow_unused=True)
    taylor = {}
    for name, g in zip(names, grads):
        a = acts[name].detach()
        taylor[name] = torch.zeros(a.shape[1]) if g is None else -(a * g).transpose(0, 1).flatten(1).sum(1)
    return logits.detach(), {n: a.detach() for n, a in acts.items()}, taylor


def filter_impact(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    top_k: int = 5,
    method: Method = "auto",
    max_batch: int = 64,
    exact_budget: float = 200.0,
    exact: Literal["budget", "all"] = "budget",
    seed: int = 0,
    alpha: float = DEFAULT_ALPHA,
    log_index: int = 0,
    share: tuple[int, int] = (0, 1),
) -> Arrays:
    """Per layer and filter: exact ablation effects, the Taylor estimate, and what the filter fires on.

    x: probe (N, C, *spatial); y: integer labels (N,) < the model's number of classes.
    Every filter gets the Taylor estimate. exact="all" ablates every filter exactly; "budget"
    spends at most `exact_budget` forward passes of the probe on the whole call, calibration and
    the first log's check of each layer's replay (`FilterAblation.check_cost`) included (`exact_plan`: whole layers where they fit an equal share, else the top-Taylor
    filters, and on the layer's calibration turn — the `log_index`-th log of the turns — a random
    sample drawn by a generator seeded with (`seed`, `log_index`)); a layer's cost per filter is
    FilterAblation.cost (suffix FLOPs, in forward passes). A filter's score on an image is the spatial mean of its rectified output
    max(a, 0) (how much it fires) for selectivity and errors, and the spatial max of a for ranking
    top-k examples.
    Keys, besides ablation_metrics' (exact-only metrics NaN / −1 where `exact` is False) and
    top_activating's: "taylor_d_loss" (F,); "sampled" (F,) the filters whose exact result checks
    the estimate without bias (a whole layer, or its random sample); "taylor_spearman" () rank
    correlation of taylor_d_loss with d_loss over the sampled filters (NaN with fewer than three, or
    either constant); "class_selectivity" (F,);
    "act_on_errors", "act_on_correct" (F,) mean score on probe examples the clean model gets
    wrong / right (NaN when there are none); and `finish_impact`'s significance keys at level `alpha`.
    share (rank, ranks): ablate only every ranks-th of the chosen filters, from the rank-th, and leave
    the layer unfinished, for `merge_impact` and `finish_impact` on the rank that gathers the parts.
    """
    if exact not in ("budget", "all"):
        raise ValueError(f"exact must be 'budget' or 'all', got {exact!r}")
    if not exact_budget > 0:
        raise ValueError(f"exact_budget must be > 0 forward passes, got {exact_budget!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha!r}")
    rank, ranks = share
    model = unwrap(model)
    x = as_model_input(model, x.detach())
    y = torch.as_tensor(y).to(x.device).long()
    _, acts, taylor = taylor_activations(model, layers, x, y)
    ablation = FilterAblation(model, x, method=method, max_batch=max_batch)
    wrong = ablation.clean.argmax(1) != y
    estimates = {name: taylor[name].cpu().numpy() for name in acts}
    if exact == "all":
        plan = {name: (np.ones(len(t), bool),) * 2 for name, t in estimates.items()}
    else:
        costs = {name: ablation.cost(name) for name in acts}
        checks = sum(ablation.check_cost(name) for name in acts)  # the run's first log makes sure of each replay
        plan = exact_plan(estimates, costs, max(exact_budget - checks, 0.0), log_index, np.random.default_rng((seed, log_index)))
    result: Arrays = {}
    for name, a in acts.items():
        fires = a.float().clamp_min(0).flatten(2).mean(-1)  # (N, F)
        peak = a.float().flatten(2).amax(-1)  # (N, F)
        t = estimates[name]
        chosen, sampled = plan[name]
        mine = np.flatnonzero(chosen)[rank::ranks].tolist()
        metrics = ablation_metrics(ablation.clean, y, len(t), ablation.passes(name, mine))
        metrics.update(
            taylor_d_loss=t,
            sampled=sampled,
            class_selectivity=class_selectivity(fires, y).cpu().numpy(),
            act_on_errors=fires[wrong].mean(0).cpu().numpy(),
            act_on_correct=fires[~wrong].mean(0).cpu().numpy(),
        )
        metrics.update(top_activating(peak, y, top_k))
        result[name] = metrics if ranks > 1 else finish_impact(metrics, y.cpu().numpy(), alpha)
    return result


# Per-filter results that only the rank that ablated a filter has; the rest is the same on every rank.
_ABLATED_ROWS = ("d_accuracy", "d_confidence", "d_loss", "flips", "discordant")


def merge_impact(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """One layer's impact from the `share`d parts of several ranks: each filter's ablation results
    from the rank that ablated it, the flips of all, and "ablated_by_rank" (ranks,) int."""
    merged = {k: np.array(v, copy=True) for k, v in parts[0].items()}
    for part in parts[1:]:
        mine = part["exact"]
        for key in _ABLATED_ROWS:
            merged[key][mine] = part[key][mine]
        merged["exact"] |= mine
    flips = [np.concatenate([p[k] for p in parts]) for k in ("flip_filter", "flip_image", "flip_pred")]
    order = np.lexsort((flips[1], flips[0]))
    merged.update(flip_filter=flips[0][order], flip_image=flips[1][order], flip_pred=flips[2][order])
    merged["ablated_by_rank"] = np.array([int(p["exact"].sum()) for p in parts], dtype=np.int64)
    return merged


def finish_impact(metrics: dict[str, np.ndarray], y: np.ndarray, alpha: float) -> dict[str, np.ndarray]:
    """What needs every exact filter of the layer: the Taylor-vs-exact rank correlation, and
    McNemar p-values, BH-adjusted within the layer, intervals and the significance flag (NaN /
    False where not ablated), and "detectable_d_accuracy" () the smallest |Δaccuracy| this probe
    can detect (NaN: none; see significance.detectable_effect)."""
    exact = metrics["exact"]
    n = len(y)
    correct = int((metrics["clean_pred"] == y).sum())
    found = significance(n, correct, metrics["discordant"][exact], alpha)
    filters = len(exact)
    out = dict(metrics)
    sampled = metrics["sampled"]
    out["taylor_spearman"] = np.asarray(
        spearman(metrics["taylor_d_loss"][sampled], metrics["d_loss"][sampled]) if sampled.sum() >= 3 else np.nan
    )
    out["p_value"] = np.full(filters, np.nan)
    out["p_adjusted"] = np.full(filters, np.nan)
    out["significant"] = np.zeros(filters, bool)
    out["d_accuracy_ci"] = np.full((filters, 2), np.nan)
    for key in ("p_value", "p_adjusted", "significant", "d_accuracy_ci"):
        out[key][exact] = found[key]
    out["detectable_d_accuracy"] = np.asarray(detectable_effect(n, alpha), dtype=np.float64)
    out["alpha"] = np.asarray(alpha, dtype=np.float64)
    return out


def class_table(labels: np.ndarray, impact: Mapping[str, np.ndarray], filters: Sequence[int], alpha: float) -> dict[str, np.ndarray]:
    """Per-class changes of the given filters, rebuilt exactly from an impact record's sparse flips,
    with each class's support, a Newcombe interval of its Δrecall at level 1 − alpha
    ("d_recall_ci" (rows, C, 2)) and the smallest |Δrecall| its support can reveal
    ("detectable_d_recall" (C,), NaN: none). Keys besides: per_class_deltas'."""
    table = per_class_deltas(labels, impact["clean_pred"], impact["flip_filter"], impact["flip_image"], impact["flip_pred"], filters)
    table["d_recall_ci"] = recall_delta_ci(table["class_support"], table["tp_clean"], table["recall_lost"], table["recall_gained"], level=1 - alpha)
    table["detectable_d_recall"] = np.asarray(detectable_effect(table["class_support"], alpha), dtype=np.float64)
    return table
