"""The Taylor check over time: layers take turns at their random calibration sample within the
exact budget, every layer is sampled within a known number of logs, and the reader pools the
last samples into one rank correlation that says how many filters and which steps it rests on."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tb_convviz import ConvViz, load
from tb_convviz.analysis.impact import spearman
from tb_convviz.read.reader import CALIBRATION_LOGS
from training import one_thread, sgd_step

LOGS = 6


LAYERS = ("0", "2", "4", "6")
PARTIAL = ("0", "2")  # a dense conv after them: too costly to ablate whole on a 24-forward budget


def wide_net() -> nn.Sequential:
    """Four 48-filter convs: ablating a filter of "0" or "2" replays a dense conv after it (~0.66 and
    ~0.33 forwards), so they exceed an equal share of the budget; "4" and "6" are cheap and go whole."""
    return nn.Sequential(
        nn.Conv2d(3, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 48, 3, padding=1), nn.ReLU(),
        nn.Conv2d(48, 48, 3, padding=1), nn.ReLU(), nn.Conv2d(48, 48, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(48, 3),
    )


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    d = tmp_path_factory.mktemp("calibration")
    torch.manual_seed(0)
    model = wide_net()
    x, y = torch.randn(30, 3, 8, 8), torch.arange(30) % 3
    with one_thread(), ConvViz(str(d / "run"), probe=(x, y), perturbations=False, similarity_images=0,
                               impact={"exact_budget": 24.0}, background=False) as viz:
        for step in range(LOGS):
            sgd_step(model, x, y, 0.1)
            viz.log(model, step)
    return load(d)


def test_layers_take_turns_and_each_is_sampled_within_the_turns(logs):
    impacts = {layer: [logs.impact("run", layer, s) for s in range(LOGS)] for layer in LAYERS}
    for layer in LAYERS:
        whole = layer not in PARTIAL
        for impact in impacts[layer]:
            assert impact["exact"].all() == whole and (impact["sampled"].all() if whole else not impact["sampled"].all())
    sampling = [[layer for layer in PARTIAL if impacts[layer][s]["sampled"].any()] for s in range(LOGS)]
    assert sampling == [["0"], ["2"]] * (LOGS // 2) or sampling == [["2"], ["0"]] * (LOGS // 2)  # two turns, alternating
    for layer in PARTIAL:
        # The same sample size on each of its turns; the first log's may be smaller: it also pays,
        # from the same budget, for making sure of each layer's replay.
        counts = {int(i["sampled"].sum()) for i in impacts[layer][1:]}
        assert counts - {0} and len(counts - {0}) == 1, (layer, counts)
        assert int(impacts[layer][0]["sampled"].sum()) <= max(counts)


def test_the_taylor_check_pools_the_last_samples(logs):
    for layer in LAYERS:
        found = {s["name"]: s for s in logs.layer_scalars("run", layer, LOGS - 1)}
        rho = found["taylor_spearman"]
        impacts = {s: logs.impact("run", layer, s) for s in rho["steps"]}
        assert 0 < len(rho["steps"]) <= CALIBRATION_LOGS and all(impacts[s]["sampled"].any() for s in rho["steps"])
        assert rho["filters"] == sum(int(impacts[s]["sampled"].sum()) for s in rho["steps"])
        # The last logs that drew a sample: every log for a whole layer, every other one for a partial.
        assert rho["steps"] == [s for s in range(LOGS) if logs.impact("run", layer, s)["sampled"].any()][-CALIBRATION_LOGS:]
        taylor = np.concatenate([impacts[s]["taylor_d_loss"][impacts[s]["sampled"].astype(bool)] for s in rho["steps"]])
        exact = np.concatenate([impacts[s]["d_loss"][impacts[s]["sampled"].astype(bool)] for s in rho["steps"]])
        assert rho["value"] == pytest.approx(spearman(taylor, exact))
        assert found["accuracy"]["value"] == pytest.approx(float(logs.impact("run", layer, LOGS - 1)["accuracy"]))
        assert found["accuracy"]["label"] == "Probe accuracy" and found["taylor_spearman"]["description"]
