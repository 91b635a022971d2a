"""A per-filter metric defined outside the package (tests/user_metrics.py) goes everywhere a
built-in column goes: logs.filter_table, logs.columns, logs.to_csv, /table, /index and the filter
detail's history, computed in the background or inline, equal to the test's own computation."""
from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from models import two_conv_net
from tb_convviz import ConvViz, FilterMetric, load
from tb_convviz.model.capture import run_with_hooks
from tb_convviz.plugin.plugin import ConvVizPlugin
from training import one_thread, sgd_step
from user_metrics import GAIN, HOYER, METRICS, hoyer_reference
from wire import decode_wire

STEPS = (0, 1, 2)
BASE = "/data/plugin/convviz"


def probe() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    return torch.randn(6, 3, 8, 8, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])


def train_with(logdir: Path, background: bool, metrics: list, **options) -> dict[int, dict[str, torch.Tensor]]:
    """Three logged SGD steps; returns each step's layer outputs on the probe (the test's own pass)."""
    torch.manual_seed(0)
    model = two_conv_net((4, 5), classes=3)
    x, y = probe()
    seen = {}
    with one_thread(), ConvViz(str(logdir), probe=(x, y), perturbations=False, background=background, metrics=metrics,
                               **options) as viz:
        for step in STEPS:
            sgd_step(model, x, y, 0.3)
            model.eval()  # what the analysed copy runs in: BatchNorm on its running statistics
            with torch.no_grad():
                _, outputs = run_with_hooks(model, {"0": model[0], "3": model[3]}, x)
            model.train()
            seen[step] = outputs
            viz.log(model, step)
    return seen


@pytest.fixture(scope="module", params=[True, False], ids=["background", "inline"])
def logged(request, tmp_path_factory):
    d = tmp_path_factory.mktemp("metrics")
    seen = train_with(d / "run", request.param, METRICS)
    return d, load(d), seen


def test_a_user_metric_is_in_the_filter_table_equal_to_its_own_computation(logged):
    _, logs, seen = logged
    for step in STEPS:
        for layer in ("0", "3"):
            table = logs.filter_table("run", layer, step)
            acts = seen[step][layer].numpy()
            np.testing.assert_allclose(table["hoyer"], hoyer_reference(acts), rtol=1e-5, atol=1e-6)  # float32 storage
            assert table["gain.up"].shape == table["gain.down"].shape == (acts.shape[1],)
            # A linear conv's output at twice the input is twice the output plus the bias' share.
            assert np.all(table["gain.up"] > 1.0) and np.all(table["gain.down"] < 1.0)
            assert "l2" in table and "cosine_distance_prev" in table  # the built-in columns beside it


def test_columns_carry_the_metrics_declarations(logged):
    _, logs, _ = logged
    by_name = {c["name"]: c for c in logs.columns("run", "3")}
    assert by_name["hoyer"] == {
        "name": "hoyer", "label": "Hoyer sparsity", "description": "0 = every position active, 1 = one position",
        "kind": "metrics", "group": "user", "unit": "", "better": "higher", "first": "low", "format": "number", "ci": None,
        "record_step": STEPS[-1],
    }
    assert by_name["gain.up"]["label"] == "Gain ×2" and by_name["gain.down"]["label"] == "Gain ×0.5"
    assert by_name["gain.down"]["description"] == "Response to a brighter probe"  # the metric's own, not given per key
    assert by_name["l2"]["label"] == "L2 norm" and by_name["l2"]["group"] == "statistics"


def test_to_csv_writes_the_metric_as_raw_numbers(logged):
    _, logs, _ = logged
    rows = list(csv.DictReader(logs.to_csv("run", "0", 1).splitlines()))
    table = logs.filter_table("run", "0", 1)
    assert [float(r["hoyer"]) for r in rows] == [float(v) for v in table["hoyer"]]
    assert [int(r["dead"]) for r in rows] == [int(v) for v in table["dead"]]


def test_routes_serve_the_metric_like_a_builtin_column(logged):
    d, logs, seen = logged
    client = Client(TensorBoardWSGI([ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=str(d)))]))
    answer = client.get(f"{BASE}/table?run=run&layer=3&step=2").get_json()
    names = [c["name"] for c in answer["columns"]]
    assert {"hoyer", "gain.up", "gain.down", "l2"} <= set(names)
    np.testing.assert_allclose(decode_wire(answer["values"]["hoyer"]), logs.filter_table("run", "3", 2)["hoyer"])
    index = client.get(f"{BASE}/index").get_json()
    assert "hoyer" in [c["name"] for c in index["runs"][0]["columns"]] and index["problems"] == []
    detail = client.get(f"{BASE}/filter?run=run&layer=3&step=2&filter=1").get_json()
    history = detail["column_history"]["hoyer"]
    assert history["steps"] == list(STEPS)
    np.testing.assert_allclose(history["values"], [hoyer_reference(seen[s]["3"].numpy())[1] for s in STEPS], rtol=1e-5)


def test_layers_restricts_a_metric(tmp_path):
    only_first = FilterMetric("hoyer_first", HOYER.fn, layers=["0"])
    train_with(tmp_path / "run", False, [only_first])
    logs = load(tmp_path)
    assert "hoyer_first" in logs.filter_table("run", "0", 0)
    assert "hoyer_first" not in logs.filter_table("run", "3", 0)


def test_a_raising_metric_warns_once_naming_it_and_the_rest_lands(tmp_path):
    def broken(ctx):
        raise ZeroDivisionError("no sparsity today")

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_with(tmp_path / "run", True, [FilterMetric("broken", broken), HOYER])
    mine = [str(w.message) for w in caught if "broken" in str(w.message)]
    assert len(mine) == 1 and "FilterMetric 'broken' failed (ZeroDivisionError: no sparsity today)" in mine[0]
    logs = load(tmp_path)
    for step in STEPS:
        table = logs.filter_table("run", "3", step)
        assert "hoyer" in table and "broken" not in table and "l2" in table


@pytest.mark.parametrize("returned, message", [
    (lambda ctx: ctx.activations.mean((0, 2, 3))[:2], r"FilterMetric 'short' must return shape \(\d+,\)"),
    (lambda ctx: "sparse", "FilterMetric 'short' must return one number per filter"),
])
def test_a_metric_of_the_wrong_shape_fails_at_the_first_log_naming_it(tmp_path, returned, message):
    with ConvViz(str(tmp_path / "run"), probe=probe(), perturbations=False, metrics=[FilterMetric("short", returned)]) as viz:
        with pytest.raises(ValueError, match=message):
            viz.log(two_conv_net((4, 5), classes=3), 0)


@pytest.mark.parametrize("kwargs, message", [
    ({"metrics": "hoyer"}, "metrics must be a FilterMetric"),
    ({"metrics": [HOYER, HOYER]}, "names must be unique"),
    ({"metrics": [FilterMetric("l2", HOYER.fn)]}, "name built-in columns"),
])
def test_bad_metrics_arguments_fail_at_construction(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        ConvViz(str(tmp_path), probe=probe(), **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "a/b"}, "name must be"),
    ({"fn": 3}, "fn must be callable"),
    ({"better": "up"}, "better must be"),
    ({"layers": 3}, "layers must be"),
])
def test_bad_filter_metric_arguments_name_the_argument(kwargs, message):
    args = {"name": "m", "fn": HOYER.fn, **kwargs}
    with pytest.raises(ValueError, match=message):
        FilterMetric(args.pop("name"), args.pop("fn"), **args)


def test_gain_metric_is_declared_per_key():
    assert GAIN.column("up").name == "gain.up" and GAIN.column("up").description.startswith("mean |output|")
