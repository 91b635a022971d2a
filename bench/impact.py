"""Benchmark: exact filter ablation against Captum's LayerFeatureAblation, and the full analysis cost.

For a small CNN and a ResNet-18-shaped net (112 px, 8 probe images, 10 classes) it checks that
our Δ(true-class logit) per filter equals Captum's within 1e-5, prints the time ratio measured in
the same run, and prints the full perturbation + impact analysis time as a multiple of one bare
forward pass. Captum is a bench-only dependency; without it the baseline is a naive one-forward-
per-filter hook ablation, and the output says so. Not a test: the numbers are what it prints.

    /work/venv/bin/python bench/impact.py            # ResNet: a shallow-to-deep subset of convs for the comparison
    /work/venv/bin/python bench/impact.py --all-resnet-layers   # every conv (Captum then takes many minutes)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import ResNet18Shaped, three_conv_cnn  # noqa: E402
from tb_convviz.analysis.ablation import ablated_logits  # noqa: E402
from tb_convviz.analysis.impact import filter_impact  # noqa: E402
from tb_convviz.analysis.perturbation import perturbation_responses  # noqa: E402
from tb_convviz.layers import conv_layers  # noqa: E402

try:
    from captum.attr import LayerFeatureAblation
except ImportError:
    LayerFeatureAblation = None

# shallowest (everything is downstream: our worst case), middle, deepest (our best case)
RESNET_SUBSET = ("conv1", "layer2.1.conv1", "layer4.1.conv2")
MAX_BATCH = 256  # images per pass, for ours and for Captum's perturbations_per_eval alike


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


def compare(
    title: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, layers: list[str], unbatched: bool, repeats: int
) -> None:
    """Ours vs the baseline on the same model, probe and layers: max |difference| and time ratios.

    The batched baseline stacks as many filters per forward as ours does (a fair comparison);
    `unbatched` also times Captum's default of one filter per forward. With repeats > 1 each
    timing is the median after a warm-up call.
    """
    filters = sum(_layer_output_shape(model, model.get_submodule(n), x)[1] for n in layers)
    print(f"\n== {title}: {len(layers)} conv layers, {filters} filters, probe {tuple(x.shape)}")
    got: dict = {}
    t_ours = seconds(
        lambda: got.update(zip(("clean", "ablated"), ablated_logits(model, layers, x, max_batch=MAX_BATCH))), repeats
    )
    idx = torch.arange(x.shape[0])
    ours = {n: (got["clean"][idx, y][None, :] - got["ablated"][n][:, idx, y]).T.numpy() for n in layers}  # (N, F)
    size = float(np.mean([np.abs(v).mean() for v in ours.values()]))
    print(f"   ours (exact, fx downstream replay, {MAX_BATCH // x.shape[0]} filters/pass): {t_ours:8.2f} s"
          f"   (mean |Δ true-class logit| {size:.3f}, the scale the differences below compare to)")
    runs = [MAX_BATCH // x.shape[0]] if LayerFeatureAblation is not None else []
    if unbatched or LayerFeatureAblation is None:
        runs.append(1)
    for per_eval in runs:
        ref: dict[str, np.ndarray] = {}
        t_base = seconds(lambda: ref.update({n: baseline_delta(model, n, x, y, per_eval) for n in layers}), repeats)
        worst = max(float(np.abs(ours[n] - ref[n]).max()) for n in layers)
        name = f"Captum LayerFeatureAblation, {per_eval} filter{'s' if per_eval > 1 else ''}/pass" if LayerFeatureAblation is not None else (
            "naive hooks, 1 filter/pass (captum missing)"
        )
        print(f"   baseline ({name}): {t_base:8.2f} s → ours {t_base / t_ours:5.1f}× faster; "
              f"max |ours − baseline| {worst:.1e} ({'OK' if worst <= 1e-5 else 'MISMATCH'} at 1e-5)")


def bare_forward_seconds(model: nn.Module, x: torch.Tensor) -> float:
    """Median time of one forward of the probe, no grad: the unit the analysis cost is counted in."""
    with torch.no_grad():
        return seconds(lambda: model(x), repeats=5)


def full_analysis(title: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, repeats: int) -> None:
    """perturbation_responses + filter_impact over every conv layer, as a multiple of one bare forward."""
    layers = conv_layers(model)
    t_fwd = bare_forward_seconds(model, x)
    t_pert = seconds(lambda: perturbation_responses(model, layers, x, y), repeats)
    t_imp = seconds(lambda: filter_impact(model, layers, x, y), repeats)
    print(f"   {title}: full analysis of all {len(layers)} conv layers (bare forward {t_fwd * 1e3:.1f} ms):")
    print(f"     perturbation_responses {t_pert:7.2f} s = {t_pert / t_fwd:7.0f}× forward")
    print(f"     filter_impact          {t_imp:7.2f} s = {t_imp / t_fwd:7.0f}× forward")
    print(f"     both                   {t_pert + t_imp:7.2f} s = {(t_pert + t_imp) / t_fwd:7.0f}× forward")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--all-resnet-layers", action="store_true", help="compare on every ResNet conv, not a subset")
    parser.add_argument("--captum-unbatched", action="store_true",
                        help="also time Captum's default of one filter per forward on the ResNet (slow)")
    parser.add_argument("--skip-full", action="store_true", help="skip the full perturbation + impact timing")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; baseline: "
          + ("captum" if LayerFeatureAblation is not None else "CAPTUM MISSING (pip install captum) → naive hooks"))
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 10, (8,), generator=gen)

    cnn = prepared(three_conv_cnn())
    x_small = torch.randn(8, 3, 32, 32, generator=gen)
    compare("small CNN", cnn, x_small, y, list(conv_layers(cnn)), unbatched=True, repeats=3)
    if not args.skip_full:
        full_analysis("small CNN", cnn, x_small, y, repeats=3)

    resnet = prepared(ResNet18Shaped())
    x_big = torch.randn(8, 3, 112, 112, generator=gen)
    names = list(conv_layers(resnet)) if args.all_resnet_layers else list(RESNET_SUBSET)
    compare("ResNet-18 shape" + ("" if args.all_resnet_layers else " (layer subset)"), resnet, x_big, y, names, args.captum_unbatched, repeats=1)
    if not args.skip_full:
        full_analysis("ResNet-18 shape", resnet, x_big, y, repeats=1)


if __name__ == "__main__":
    main()
