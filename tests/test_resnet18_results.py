"""On the ResNet-18-shaped net (bench/models.py: 20 convs, 4,800 filters), what one log stores equals
a direct computation within the stored tolerance: every exactly ablated filter's Δloss, Δconfidence,
Δaccuracy and flips equal a naive ablation (a full forward with the filter's channel zeroed), with
the default budget and with `{"exact": "all"}`, and the perturbation responses equal the analysis
called on its own. The log's cheaper passes (the fx replay of only what an ablation changes, shared
perturbation passes, the budget) must never change an answer."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from tb_convviz import ConvViz
from tb_convviz.analysis.impact import ablation_metrics
from tb_convviz.analysis.perturbation import perturbation_responses
from tb_convviz.read.reader import load
from tb_convviz.schema import format as fmt
from training import one_thread

CHECKED = ("conv1", "layer1.0.conv2", "layer2.0.downsample.0", "layer3.1.conv1", "layer4.1.conv2")
PER_LAYER = 12  # filters of each checked layer compared with a naive ablation


def resnet18_shaped() -> nn.Module:
    """The benchmarks' ResNet-18-shaped net (the repository's bench/models.py, not a package)."""
    path = Path(__file__).resolve().parents[1] / "bench" / "models.py"
    spec = importlib.util.spec_from_file_location("bench_models", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    return module.ResNet18Shaped(classes=10)


def naive_logits(model: nn.Module, layer: str, filters: list[int], x: torch.Tensor) -> torch.Tensor:
    """(len(filters), N, K): one full forward per filter with its output channel zeroed."""
    module = model.get_submodule(layer)
    rows = []
    for f in filters:
        handle = module.register_forward_hook(lambda _m, _i, out, f=f: out.index_fill(1, torch.tensor([f]), 0.0))
        try:
            with torch.no_grad():
                rows.append(model(x))
        finally:
            handle.remove()
    return torch.stack(rows)


@pytest.fixture(scope="module", params=[{}, {"exact": "all"}], ids=["default_budget", "exact_all"])
def logged(request, tmp_path_factory):
    model = resnet18_shaped()
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(8, 3, 16, 16, generator=g), torch.arange(8) % 10
    logdir = tmp_path_factory.mktemp("r18")
    with one_thread(), ConvViz(str(logdir / "run"), probe=(x, y), impact=request.param or True, background=False) as viz:
        viz.log(model, 0)
    reference = copy.deepcopy(model).eval()
    return load(logdir), reference, x, y, request.param


def test_exactly_ablated_filters_equal_a_naive_ablation(logged) -> None:
    logs, model, x, y, options = logged
    with torch.no_grad():
        clean = model(x)
    compared = 0
    for layer in CHECKED:
        impact = logs.impact("run", layer, 0)
        exact = np.flatnonzero(impact["exact"])
        if options.get("exact") == "all":
            assert len(exact) == model.get_submodule(layer).out_channels
        filters = exact[:: max(1, len(exact) // PER_LAYER)][:PER_LAYER].tolist()
        if not filters:
            continue
        want = ablation_metrics(clean, y, len(impact["exact"]), [(filters, naive_logits(model, layer, filters, x))])
        for key in ("d_loss", "d_confidence", "d_accuracy"):
            np.testing.assert_allclose(impact[key][filters], want[key][filters], atol=2e-4, rtol=1e-3, err_msg=f"{layer} {key}")
        np.testing.assert_array_equal(impact["flips"][filters], want["flips"][filters], err_msg=layer)
        compared += len(filters)
    assert compared >= 3 * PER_LAYER  # the default budget ablates at least the small layers whole


def test_perturbation_responses_equal_the_analysis_alone(logged) -> None:
    logs, model, x, y, _ = logged
    layers = {name: model.get_submodule(name) for name in CHECKED}
    alone = perturbation_responses(model, layers, x, y)
    for layer in CHECKED:
        stored = logs.bundle("run", layer, fmt.KIND_PERTURBATION, 0)
        for key, want in alone[layer].items():
            want = np.asarray(want, dtype=np.float32)
            got = stored.array(key)
            assert got.shape == want.shape, (layer, key)
            if stored._header[key]["enc"] == "q8":  # per filter: (max − min) / 510 of each filter's row
                flat = want.reshape(want.shape[0], -1)
                bound = ((flat.max(1) - flat.min(1)) / 510 + 1e-6).reshape(-1, *([1] * (want.ndim - 1)))
                assert (np.abs(got - want) <= bound * 1.001).all(), (layer, key)
            else:  # f16s (scalars, short rows): three significant digits
                np.testing.assert_allclose(got, want, rtol=2e-3, atol=np.abs(want).max() * 2e-3 + 1e-12, err_msg=f"{layer} {key}")
