"""Feature visualization: ours (batched) vs Lucent's render_vis (one filter at a time), and what
`feature_vis=True` adds to a ResNet-50-shaped log.

1. The same filters of a Conv-BN-ReLU net at 64 px, the same steps and image size. Lucent runs
   `render_vis` with `param.image(size, fft=True, decorrelate=True)`, `preprocess=False`,
   `fixed_image_size=size` (neither normalised nor upsampled to 224) and its standard transforms,
   on a fresh copy of the model for every filter; its objective is the channel of the ReLU module
   after the conv, ours the same ReLU (after the BatchNorm). Both final images are scored by the
   same function: the filter's mean ReLU activation on the untransformed image. Goals: our
   activation ≥ 0.9× Lucent's (median over filters of the ratio), our time per filter with every
   filter in one batch ≤ 0.25× Lucent's.
2. `--resnet50 LOGS`: logs of the ResNet-50-shaped net (bench/models.py), 32-image probe at 64 px,
   impact=True and feature_vis=True, every other option at its default: each log's forward-
   equivalents by part (goal ≤ 300 for the whole log; feature_vis's budget is 40), the filters visualised.

Lucent (`pip install '.[bench]'`, then `pip install --no-deps torch-lucent`) imports torchvision
(only its `Normalize`, unused with preprocess=False), IPython (only to show images) and kornia's old
top-level names; torchvision must not be installed here (its CUDA build fails to import), so the
script stands in stubs for those two imports and aliases kornia's names. When Lucent still cannot
run, it says why and prints our numbers alone.

    python bench/feature_vis.py [--filters 16] [--steps 128] [--size 64] [--resnet50 3] [--skip-lucent]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tb_convviz.analysis.feature_vis import feature_visualization  # noqa: E402

GOAL_ACTIVATION = 0.9
GOAL_TIME = 0.25
GOAL_FORWARDS = 300


def vgg_like() -> nn.Module:
    """Conv-BN-ReLU blocks with a ReLU module of their own each (Lucent hooks modules by name)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    widths = [(3, 32), (32, 64), (64, 96), (96, 128)]
    for i, (cin, cout) in enumerate(widths):
        layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU()]
        if i < len(widths) - 1:
            layers.append(nn.MaxPool2d(2))
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, 10))
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def lucent_render() -> tuple[Optional[Any], str]:
    """(lucent's render and param modules, "") or (None, why not)."""
    try:
        import kornia
        import kornia.geometry.transform as kgt
    except Exception as e:  # noqa: BLE001 - a benchmark reports what it could not run
        return None, f"kornia does not import ({type(e).__name__}: {e})"
    if "torchvision" not in sys.modules:
        tv, tvt = types.ModuleType("torchvision"), types.ModuleType("torchvision.transforms")

        class Normalize:  # preprocess=False never builds one
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                raise RuntimeError("stub: torchvision is not installed")

        tvt.Normalize, tv.transforms = Normalize, tvt
        sys.modules.update({"torchvision": tv, "torchvision.transforms": tvt})
    if "IPython" not in sys.modules:
        ip, ipd = types.ModuleType("IPython"), types.ModuleType("IPython.display")
        ip.display = ipd
        sys.modules.update({"IPython": ip, "IPython.display": ipd})
    for name in ("get_rotation_matrix2d", "warp_affine"):
        if not hasattr(kornia, name):
            setattr(kornia, name, getattr(kgt, name))
    try:
        from lucent.optvis import param, render
    except Exception as e:  # noqa: BLE001
        return None, f"lucent does not import ({type(e).__name__}: {e})"
    return (render, param), ""


def scores(model: nn.Module, conv: int, images: torch.Tensor, filters: list[int]) -> np.ndarray:
    """Each image's mean activation of its filter after the conv's BatchNorm and ReLU."""
    out = {}
    handle = model[conv + 2].register_forward_hook(lambda m, i, o: out.setdefault("a", o))
    try:
        with torch.no_grad():
            model(images)
    finally:
        handle.remove()
    return out["a"][torch.arange(len(filters)), filters].mean((1, 2)).numpy()


def compare_with_lucent(n_filters: int, steps: int, size: int, conv: int, rounds: int) -> None:
    """Timed in `rounds` rounds, each ours on every filter (one batch) then Lucent on every
    `rounds`-th filter, so that a machine whose load changes meanwhile weighs on both alike; the
    ratio is each round's, and their median."""
    model = vgg_like()
    filters = list(range(n_filters))
    probe = torch.rand(32, 3, size, size, generator=torch.Generator().manual_seed(0))  # the value range [0, 1], as Lucent's
    print(f"Conv-BN-ReLU net, conv at index {conv} ({model[conv].out_channels} filters), {n_filters} filters, "
          f"{steps} steps, {size} px, {torch.get_num_threads()} threads, {rounds} rounds")
    found, why = lucent_render()
    if found is None:
        print(f"  Lucent's render_vis cannot run here: {why}; only our numbers follow")
    ours, lucent_images, ratios = None, {}, []
    for r in range(rounds):
        start = time.perf_counter()
        ours = feature_visualization(model, {str(conv): model[conv + 1]}, probe, {str(conv): filters}, {str(conv): model[conv + 2]},
                                     steps=steps, batch=n_filters)[str(conv)]
        ours_s = (time.perf_counter() - start) / n_filters
        if found is None:
            print(f"  round {r}: ours {ours_s:.3f} s a filter, batched")
            continue
        render, param = found
        lucent_s = []
        for f in filters[r::rounds]:
            fresh = copy.deepcopy(model)
            torch.manual_seed(f)
            start = time.perf_counter()
            (image,) = render.render_vis(fresh, f"{conv + 2}:{f}", param_f=lambda: param.image(size, fft=True, decorrelate=True),
                                         thresholds=(steps,), preprocess=False, progress=False, show_image=False,
                                         fixed_image_size=size)
            lucent_s.append(time.perf_counter() - start)
            lucent_images[f] = torch.from_numpy(image[0]).permute(2, 0, 1)
        ratios.append(ours_s / statistics.mean(lucent_s))
        print(f"  round {r}: ours {ours_s:.3f} s a filter, batched; Lucent {statistics.mean(lucent_s):.3f} s a filter, "
              f"one at a time ({len(lucent_s)} filters): {ratios[-1]:.2f}×")
    assert ours is not None
    ours_act = scores(model, conv, torch.from_numpy(ours["images"]), filters)
    print(f"  ours: activation median {np.median(ours_act):.3f} (probe's best {np.median(ours['probe_best']):.3f})")
    if found is None:
        return
    lucent_act = scores(model, conv, torch.stack([lucent_images[f] for f in filters]), filters)
    ratio = np.median(ours_act / np.maximum(lucent_act, 1e-12))
    print(f"  Lucent: activation median {np.median(lucent_act):.3f}")
    print(f"  activation, ours / Lucent's (median over filters): {ratio:.2f}× (goal ≥ {GOAL_ACTIVATION}); "
          f"ours ≥ 0.9× Lucent's on {int((ours_act >= 0.9 * lucent_act).sum())} of {n_filters} filters")
    print(f"  time per filter, ours batched / Lucent's: median over rounds {statistics.median(ratios):.2f}× "
          f"(rounds {', '.join(f'{x:.2f}' for x in ratios)}; goal ≤ {GOAL_TIME})")


def resnet50_log(logs_n: int) -> None:
    from bench.models import ResNet50Shaped
    from tb_convviz import ConvViz, load
    from tb_convviz.schema import format as fmt

    model = ResNet50Shaped(classes=1000)
    gen = torch.Generator().manual_seed(1)
    probe = torch.randn(32, 3, 64, 64, generator=gen)
    labels = torch.randint(0, 1000, (32,), generator=gen)
    vis = True
    with tempfile.TemporaryDirectory() as d:
        with ConvViz(d, probe=(probe, labels), impact=True, feature_vis=vis) as viz:
            for epoch in range(logs_n):
                viz.log(model, epoch)
                viz.flush()
        logs = load(d)
        run = logs.runs()[0]
        print(f"\nResNet-50-shaped, 32-image probe at 64 px, impact=True, feature_vis={vis!r}, other options default")
        for epoch in range(logs_n):
            cost = logs.cost(run, epoch)
            shown = []
            for layer in logs.layers(run):
                try:
                    shown.append((layer, len(logs.feature_vis(run, layer, epoch)["filters"]))
                                 if logs.feature_vis(run, layer, epoch)["step"] == epoch else None)
                except Exception:  # noqa: BLE001 - a layer without visualisations
                    continue
            shown = [s for s in shown if s]
            parts = sorted(cost["parts"].items(), key=lambda kv: -kv[1]["wall_s"])
            fe = cost["forward_equivalents"]
            print(f"  log {epoch}: {cost['wall_s']:.1f} s = {fe:.0f} forward-equivalents (goal ≤ {GOAL_FORWARDS}) — "
                  + ", ".join(f"{name} {p['forward_equivalents']:.1f}" for name, p in parts))
            print(f"    {fmt.KIND_FEATURE_VIS}: {sum(n for _, n in shown)} filters in {len(shown)} layers: "
                  + ", ".join(f"{layer} {n}" for layer, n in shown))


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--conv", type=int, default=8, help="index of the conv in the net (0, 4, 8, 12)")
    parser.add_argument("--resnet50", type=int, default=0, metavar="LOGS",
                        help="also this many logs of the ResNet-50-shaped net (the first keeps every full kernel)")
    parser.add_argument("--rounds", type=int, default=4, help="timing rounds, each ours then a share of Lucent's filters")
    parser.add_argument("--skip-lucent", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_lucent:
        compare_with_lucent(args.filters, args.steps, args.size, args.conv, args.rounds)
    if args.resnet50:
        resnet50_log(args.resnet50)


if __name__ == "__main__":
    main()
