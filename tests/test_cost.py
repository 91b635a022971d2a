"""Every log records what it cost, by part, with its step: read back through `load()` and served
for the tab; the parts account for the whole log."""
from __future__ import annotations

import pytest
import torch

from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from models import two_conv_net
from tb_convviz.plugin.plugin import ConvVizPlugin
from tb_convviz import ConvViz, NotFound, load
from tb_convviz.write.cost import PROBE_PASS, CostMeter, cost_line
from training import one_thread, sgd_step

STEPS = (0, 1, 2, 3)


@pytest.fixture(scope="module", params=[True, False], ids=["background", "inline"])
def logs(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("cost")
    torch.manual_seed(0)
    model = two_conv_net((8, 12), classes=3)
    x, y = torch.randn(24, 3, 12, 12), torch.arange(24) % 3
    with one_thread(), ConvViz(str(d / "run"), probe=(x, y), impact=True, background=request.param) as viz:
        for step in STEPS:
            sgd_step(model, x, y, 0.1)
            viz.log(model, step)
    return load(d)


def test_every_step_records_its_cost_by_part(logs):
    for step in STEPS:
        cost = logs.cost("run", step)
        parts = cost["parts"]
        assert {PROBE_PASS, "statistics and maps", "similarity", "perturbation", "impact", "writing"} <= set(parts)
        assert parts[PROBE_PASS]["forward_equivalents"] == 1.0 and cost["forward_s"] == parts[PROBE_PASS]["wall_s"]
        for name, part in parts.items():
            assert part["wall_s"] >= 0 and part["cpu_s"] >= 0, name
            assert part["forward_equivalents"] == pytest.approx(part["wall_s"] / cost["forward_s"]), name
        assert cost["wall_s"] == pytest.approx(sum(p["wall_s"] for p in parts.values()))
        # The parts account for the whole log: what they leave out is under 10% of it (in CPU time of
        # the analysing thread, which other work on a busy machine does not stretch).
        assert cost["span_s"] >= cost["wall_s"] and cost["span_cpu_s"] >= cost["cpu_s"]
        assert cost["cpu_s"] >= 0.9 * cost["span_cpu_s"], (cost["cpu_s"], cost["span_cpu_s"])
        assert (cost["since_last_log_s"] is None) == (step == STEPS[0])


def test_the_cost_line_names_the_largest_part_first(logs):
    cost = logs.cost("run", STEPS[-1])
    largest = max(cost["parts"], key=lambda name: cost["parts"][name]["wall_s"])
    line = cost_line(cost)
    assert line.startswith("this log: ") and line.split(" — ")[1].startswith(largest + " ")


def test_the_cost_route_answers_every_step(logs):
    client = Client(TensorBoardWSGI([ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=logs.logdir))]))
    answer = client.get("/data/plugin/convviz/cost?run=run").get_json()
    assert answer["steps"] == list(STEPS)
    assert answer["costs"][-1] == logs.cost("run", STEPS[-1])
    assert client.get("/data/plugin/convviz/cost?run=nope").status_code == 404


def test_a_step_without_a_cost_is_not_found(logs):
    with pytest.raises(NotFound, match="no cost for step 99"):
        logs.cost("run", 99)


def test_the_meter_counts_a_part_that_raises():
    meter = CostMeter()
    with pytest.raises(ZeroDivisionError), meter.part("broken"):
        sum(range(10_000)) / 0
    with meter.part(PROBE_PASS):
        sum(range(10_000))
    summary = meter.summary(None)
    assert summary["parts"]["broken"]["wall_s"] > 0 and summary["forward_s"] > 0
