"""Benchmark: exact filter ablation against Captum's LayerFeatureAblation, and impact at scale.

Comparisons (each baseline measured in the same run, on the same model, probe and layers, with the
same number of probe images per forward): a small CNN; the early-heavy residual net (c1 3→64,
c2 64→64 + skip, c3 64→128 stride 2; 64 images at 32 px, every layer); the ResNet-18-shaped net
(8 images at 112 px, a shallow, a middle and the deepest conv). Each checks that our Δ(true-class
logit) per filter equals Captum's within 1e-5, prints the time ratio, and the FLOP limit of that
ratio: Captum runs one forward per filter, we run each filter's suffix (FilterAblation.cost: the
ops below the ablated conv, the first mixing op with one input channel), so ΣF / Σ F·cost is the
speedup if time followed FLOPs; "of the limit" is the measured ratio over it.

Then a ResNet-50-shaped net (26,560 filters, 1000 classes; 32 images at 64 px): filter_impact with
the default budget, timed on its last bottleneck block, and for all 53 layers the number of filters
the budget ablates exactly and the forward passes that takes, from the cost model (--resnet50-all
runs all of it; bench/background.py times a whole ResNet-50 epoch in the background worker).

Without Captum the baseline is a naive one-forward-per-filter hook ablation, and the output says so.
Not a test: the numbers are what it prints.

    /work/venv/bin/python bench/impact.py
    /work/venv/bin/python bench/impact.py --all-resnet-layers --resnet50-all   # long
"""
from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import EarlyHeavyResNet, ResNet18Shaped, ResNet50Shaped, three_conv_cnn  # noqa: E402
from tb_convviz.analysis.ablation import FilterAblation  # noqa: E402
from tb_convviz.analysis.impact import SAMPLE_MIN, exact_plan, filter_impact  # noqa: E402
from tb_convviz.analysis.perturbation import perturbation_responses  # noqa: E402
from tb_convviz.model.layers import conv_layers  # noqa: E402

try:
    from captum.attr import LayerFeatureAblation
except ImportError:
    LayerFeatureAblation = None

# shallowest (everything is downstream: our worst case), middle, deepest (our best case)
RESNET_SUBSET = ("conv1", "layer2.1.conv1", "layer4.1.conv2")
RESNET50_TIMED = ("layer4.2.conv1", "layer4.2.conv2", "layer4.2.conv3")
RESNET50_FILTERS = 26_560
MAX_BATCH = 64  # probe images per forward, for ours (FilterAblation's default) and Captum's perturbations_per_eval


def prepared(model: nn.Module) -> nn.Module:
    """Eval mode with non-trivial BatchNorm statistics (BN is not an identity) and a head whose
    logits are O(1), so a 1e-5 agreement is tight relative to the ablation effects compared."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            if isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * 4 / m.in_features**0.5)
    return model.eval()


def seconds(fn: Callable[[], object], repeats: int = 1) -> float:
    """Median wall time of `repeats` calls (after one warm-up call when repeating)."""
    if repeats > 1:
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def ours_delta(model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Δ true-class logit (clean − ablated) per (image, filter), by FilterAblation."""
    ablation = FilterAblation(model, x, max_batch=MAX_BATCH)
    idx = torch.arange(x.shape[0])
    rows = [ablation.clean[idx, y][None, :] - logits[:, idx, y] for _, logits in ablation.passes(layer)]
    return torch.cat(rows).T.numpy()


def baseline_delta(model: nn.Module, layer: str, x: torch.Tensor, y: torch.Tensor, per_eval: int) -> np.ndarray:
    """Δ true-class logit (clean − ablated) per (image, filter) from the baseline: Captum with
    `per_eval` filters per forward, else (captum missing) naive hooks, one forward per filter."""
    module = model.get_submodule(layer)
    if LayerFeatureAblation is not None:
        out_shape = _layer_output_shape(model, module, x)
        mask = torch.arange(out_shape[1]).reshape(1, -1, *([1] * (len(out_shape) - 2)))

        def true_logit(inp: torch.Tensor) -> torch.Tensor:
            # Captum stacks ablated copies at the layer, not at the input, and does not repeat a
            # per-example target to match; so select the true class here, for however many copies.
            out = model(inp)
            return out.gather(1, y.repeat(out.shape[0] // y.shape[0])[:, None])[:, 0]

        attr = LayerFeatureAblation(true_logit, module).attribute(x, layer_mask=mask, perturbations_per_eval=per_eval)
        return attr.flatten(2)[:, :, 0].detach().numpy()
    rows = []
    with torch.no_grad():
        clean = model(x).gather(1, y[:, None])[:, 0]
        for f in range(_layer_output_shape(model, module, x)[1]):
            handle = module.register_forward_hook(lambda _m, _i, o, f=f: o.index_fill(1, torch.tensor([f]), 0.0))
            try:
                rows.append(clean - model(x).gather(1, y[:, None])[:, 0])
            finally:
                handle.remove()
    return torch.stack(rows, dim=1).numpy()


def _layer_output_shape(model: nn.Module, module: nn.Module, x: torch.Tensor) -> torch.Size:
    shape: list[torch.Size] = []
    handle = module.register_forward_hook(lambda _m, _i, o: shape.append(o.shape))
    try:
        with torch.no_grad():
            model(x)
    finally:
        handle.remove()
    return shape[0]


def compare(title: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str], repeats: int) -> None:
    """Ours vs the baseline on the same model, probe and layers: max |difference|, time ratio and
    its FLOP limit. Layer by layer, ours then the baseline, so a change in machine load hits both."""
    costs = FilterAblation(model, x).cost
    filters = {n: _layer_output_shape(model, model.get_submodule(n), x)[1] for n in layers}
    per_eval = max(1, MAX_BATCH // x.shape[0])
    baseline = (f"Captum LayerFeatureAblation, {per_eval} filter{'s' if per_eval > 1 else ''}/forward"
                if LayerFeatureAblation is not None else "naive hooks, 1 filter/forward (captum missing)")
    print(f"\n== {title}: {len(layers)} conv layers, {sum(filters.values())} filters, probe {tuple(x.shape)}; baseline: {baseline}")
    t_ours = t_base = worst = 0.0
    size = []
    for n in layers:
        got: dict[str, np.ndarray] = {}
        t_ours_n = seconds(lambda: got.update(ours=ours_delta(model, n, x, y)), repeats)
        t_base_n = seconds(lambda: got.update(base=baseline_delta(model, n, x, y, per_eval)), repeats)
        diff = float(np.abs(got["ours"] - got["base"]).max())
        print(f"   {n:>16}: {filters[n]:4d} filters, ours {t_ours_n:7.2f} s, baseline {t_base_n:7.2f} s → "
              f"{t_base_n / t_ours_n:5.1f}×  (FLOP limit {1 / max(costs(n), 1e-9):8.1f}×), max |diff| {diff:.1e}")
        t_ours, t_base, worst = t_ours + t_ours_n, t_base + t_base_n, max(worst, diff)
        size.append(float(np.abs(got["ours"]).mean()))
    limit = sum(filters.values()) / sum(filters[n] * costs(n) for n in layers)
    speedup = t_base / t_ours
    print(f"   all: ours {t_ours:.2f} s, baseline {t_base:.2f} s → {speedup:.1f}× faster; FLOP limit {limit:.1f}× "
          f"(reached {speedup / limit:.0%} of it); max |ours − baseline| {worst:.1e} "
          f"({'OK' if worst <= 1e-5 else 'MISMATCH'} at 1e-5; mean |Δ| compared {np.mean(size):.3f})")


def bare_forward_seconds(model: nn.Module, x: torch.Tensor) -> float:
    """Median time of one forward of the probe, no grad: the unit the analysis cost is counted in."""
    with torch.no_grad():
        return seconds(lambda: model(x), repeats=3)


def full_analysis(title: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> None:
    """perturbation_responses + filter_impact over every conv layer, as a multiple of one bare forward."""
    layers = conv_layers(model)
    t_fwd = bare_forward_seconds(model, x)
    t_pert = seconds(lambda: perturbation_responses(model, layers, x, y), repeats)
    t_imp = seconds(lambda: filter_impact(model, layers, x, y), repeats)
    print(f"   {title}: full analysis of all {len(layers)} conv layers (bare forward {t_fwd * 1e3:.1f} ms):")
    print(f"     perturbation_responses {t_pert:7.2f} s = {t_pert / t_fwd:7.0f}× forward")
    print(f"     filter_impact          {t_imp:7.2f} s = {t_imp / t_fwd:7.0f}× forward")


DEFAULT_BUDGET = inspect.signature(filter_impact).parameters["exact_budget"].default


def resnet50_impact(run_all: bool) -> None:
    """filter_impact with the default budget on the ResNet-50 shape: timed on RESNET50_TIMED (or
    everything), and per stage what the budget does for all 53 layers, from the cost model."""
    model = prepared(ResNet50Shaped())
    layers = conv_layers(model)
    total = sum(m.out_channels for m in layers.values())
    assert total == RESNET50_FILTERS, f"ResNet50Shaped has {total} conv filters, not {RESNET50_FILTERS:,}"
    gen = torch.Generator().manual_seed(2)
    x, y = torch.randn(32, 3, 64, 64, generator=gen), torch.randint(0, 1000, (32,), generator=gen)
    t_fwd = bare_forward_seconds(model, x)
    ablation = FilterAblation(model, x)
    costs = {name: ablation.cost(name) for name in layers}
    # exact_plan only counts here: any Taylor values give the same numbers.
    plan = exact_plan({n: np.arange(m.out_channels, dtype=float) for n, m in layers.items()}, costs, DEFAULT_BUDGET, 0,
                      np.random.default_rng(0))
    stages: dict[str, list[int]] = {}
    for name, m in layers.items():
        exact = int(plan[name][0].sum())
        stage = stages.setdefault(name.split(".")[0], [0, 0, 0])
        stage[0], stage[1], stage[2] = stage[0] + m.out_channels, stage[1] + exact, stage[2] + round(exact * costs[name])
    print(f"\n== ResNet-50 shape: {len(layers)} conv layers, {total:,} filters (asserted), 1000 classes, probe "
          f"{tuple(x.shape)}, bare forward {t_fwd:.2f} s; impact with the default budget ({DEFAULT_BUDGET:.0f} forwards "
          f"in all, calibration included: layers take turns at a random sample of {SAMPLE_MIN}):")
    for stage, (f, exact, forwards) in stages.items():
        print(f"   {stage:>7}: {f:6,} filters, {exact:6,} ablated exactly, ~{forwards:5,} forwards (cost model)")
    forwards = sum(s[2] for s in stages.values())
    print(f"   all: {sum(s[1] for s in stages.values()):,} of {total:,} exact, ~{forwards:,} forwards ≈ "
          f"{forwards * t_fwd / 60:.0f} min at this forward time")
    timed = list(layers) if run_all else list(RESNET50_TIMED)
    subset = {n: layers[n] for n in timed}
    t = time.perf_counter()
    res = filter_impact(model, subset, x, y)
    took = time.perf_counter() - t
    exact = sum(int(r["exact"].sum()) for r in res.values())
    print(f"   filter_impact on {'all layers' if run_all else ', '.join(timed)}: {took:.1f} s "
          f"= {took / t_fwd:.0f} forwards; {exact:,} of {sum(m.out_channels for m in subset.values()):,} filters ablated exactly")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all-resnet-layers", action="store_true", help="compare on every ResNet-18 conv, not a subset (long)")
    parser.add_argument("--resnet50-all", action="store_true", help="run the ResNet-50 impact on all 53 layers (about an hour)")
    parser.add_argument("--full-analysis", action="store_true", help="also time perturbation + impact on the small CNN")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; baseline: "
          + ("captum" if LayerFeatureAblation is not None else "CAPTUM MISSING (pip install captum) → naive hooks"))
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)

    cnn = prepared(three_conv_cnn())
    y8 = torch.randint(0, 10, (8,), generator=gen)
    x_small = torch.randn(8, 3, 32, 32, generator=gen)
    compare("small CNN", cnn, x_small, y8, list(conv_layers(cnn)), repeats=3)
    if args.full_analysis:
        full_analysis("small CNN", cnn, x_small, y8, repeats=3)

    early = prepared(EarlyHeavyResNet())
    x64, y64 = torch.randn(64, 3, 32, 32, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    compare("early-heavy residual net", early, x64, y64, list(conv_layers(early)), repeats=1)

    resnet = prepared(ResNet18Shaped())
    x_big = torch.randn(8, 3, 112, 112, generator=gen)
    names = list(conv_layers(resnet)) if args.all_resnet_layers else list(RESNET_SUBSET)
    compare("ResNet-18 shape" + ("" if args.all_resnet_layers else " (layer subset)"), resnet, x_big, y8, names, repeats=1)

    resnet50_impact(args.resnet50_all)


if __name__ == "__main__":
    main()
