"""What each conv filter does for the model's decisions on the labelled probe.

Exact ablation (the filter's output channel zeroed) gives the change in accuracy, per-class
recall/precision, true-class confidence, loss and the number of flipped predictions; a first-order
Taylor estimate of the loss change from one backward pass is checked against it by rank
correlation. Class selectivity, activation on errors vs correct examples and the top-k activating
probe examples describe what the filter responds to. Sign convention: every Δ is ablated − clean,
so a filter the model needs has negative Δaccuracy and positive Δloss.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz.analysis.ablation import Method, ablated_logits
from tb_convviz.capture import as_model_input, run_with_hooks
from tb_convviz.layers import unwrap

Arrays = dict[str, dict[str, np.ndarray]]

TOPK_CONCENTRATED = 0.9  # a filter whose top-k examples are ≥ 90 % one class looks like a class (or shortcut) detector


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


def ablation_metrics(clean: torch.Tensor, ablated: torch.Tensor, y: torch.Tensor) -> dict[str, np.ndarray]:
    """Decision changes from clean logits (N, K) and ablated logits (F, N, K) with labels (N,).

    Keys: "accuracy" () clean accuracy; "d_accuracy" (F,); "d_recall", "d_precision" (F, K);
    "class_support" (K,) probe examples per class; "d_confidence" (F,) change of mean softmax
    probability of the true class; "d_loss" (F,) change of mean cross-entropy; "flips" (F,) int,
    predictions that changed class. A class absent from the probe (or never predicted) has recall
    (precision) 0, so its Δ is 0; class_support tells the two apart.
    """
    k = clean.shape[1]
    clean, ablated, y = clean.float(), ablated.float(), y.to(clean.device)
    truth = F.one_hot(y, k).float()  # (N, K)
    support = truth.sum(0)

    def scores(logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Accuracy, recall, precision, true-class confidence and loss for logits (..., N, K)."""
        pred = F.one_hot(logits.argmax(-1), k).float()
        tp = (pred * truth).sum(-2)
        return {
            "accuracy": (pred * truth).sum((-2, -1)) / y.shape[0],
            "recall": tp / support.clamp_min(1),
            "precision": tp / pred.sum(-2).clamp_min(1),
            "confidence": (logits.softmax(-1) * truth).sum(-1).mean(-1),
            "loss": -(logits.log_softmax(-1) * truth).sum(-1).mean(-1),
        }

    before, after = scores(clean), scores(ablated)
    return {
        "accuracy": before["accuracy"].cpu().numpy(),
        "d_accuracy": (after["accuracy"] - before["accuracy"]).cpu().numpy(),
        "d_recall": (after["recall"] - before["recall"]).cpu().numpy(),
        "d_precision": (after["precision"] - before["precision"]).cpu().numpy(),
        "class_support": support.cpu().numpy(),
        "d_confidence": (after["confidence"] - before["confidence"]).cpu().numpy(),
        "d_loss": (after["loss"] - before["loss"]).cpu().numpy(),
        "flips": (ablated.argmax(-1) != clean.argmax(-1)).sum(-1).cpu().numpy().astype(np.int64),
    }


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
    """The k probe examples with the highest score per filter, from scores (N, F) and labels (N,).

    Keys: "topk_index" (F, k) probe indices, best first; "topk_label" (F, k); "topk_class" (F,)
    their most common label; "topk_concentration" (F,) its share of the k; "topk_flag" (F,) bool,
    concentration ≥ 0.9 (with k < 2 nothing is flagged: one example is always one class).
    """
    k = min(k, scores.shape[0])
    idx = scores.topk(k, dim=0).indices.T  # (F, k)
    labels = y.to(idx.device)[idx]
    counts = F.one_hot(labels, int(y.max()) + 1).sum(1)  # (F, classes)
    best_count, best_class = counts.max(1)
    concentration = best_count.float() / k
    return {
        "topk_index": idx.cpu().numpy().astype(np.int64),
        "topk_label": labels.cpu().numpy().astype(np.int64),
        "topk_class": best_class.cpu().numpy().astype(np.int64),
        "topk_concentration": concentration.cpu().numpy(),
        "topk_flag": ((concentration >= TOPK_CONCENTRATED) & (k >= 2)).cpu().numpy(),
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
    max_batch: int = 256,
) -> Arrays:
    """Per layer and filter: exact ablation effects, the Taylor estimate, and what the filter fires on.

    x: probe (N, C, *spatial); y: integer labels (N,) < the model's number of classes.
    A filter's score on an image is the spatial mean of its rectified output max(a, 0) (how much it
    fires) for selectivity and errors, and the spatial max of a for ranking top-k examples.
    Keys, besides ablation_metrics' and top_activating's: "taylor_d_loss" (F,); "taylor_spearman" ()
    rank correlation of taylor_d_loss with d_loss (NaN if either is constant);
    "class_selectivity" (F,); "act_on_errors", "act_on_correct" (F,) mean score on probe examples
    the clean model gets wrong / right (NaN when there are none).
    """
    model = unwrap(model)
    x = as_model_input(model, x.detach())
    y = torch.as_tensor(y).to(x.device).long()
    _, acts, taylor = taylor_activations(model, layers, x, y)
    clean, ablated = ablated_logits(model, list(layers), x, method=method, max_batch=max_batch)
    wrong = clean.argmax(1) != y
    result: Arrays = {}
    for name, a in acts.items():
        fires = a.float().clamp_min(0).flatten(2).mean(-1)  # (N, F)
        peak = a.float().flatten(2).amax(-1)  # (N, F)
        metrics = ablation_metrics(clean, ablated[name], y)
        t = taylor[name].cpu().numpy()
        metrics.update(
            taylor_d_loss=t,
            taylor_spearman=np.asarray(spearman(t, metrics["d_loss"])),
            class_selectivity=class_selectivity(fires, y).cpu().numpy(),
            act_on_errors=fires[wrong].mean(0).cpu().numpy(),
            act_on_correct=fires[~wrong].mean(0).cpu().numpy(),
        )
        metrics.update(top_activating(peak, y, top_k))
        result[name] = metrics
    return result
