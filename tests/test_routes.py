"""The plugin's HTTP routes, through TensorBoard's own WSGI app and data provider, over logs the
real ConvViz callback wrote. Every bad parameter is a 4xx with a JSON {"error": ...}, never a 500."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.plugins import base_plugin
from torch import nn
from werkzeug.test import Client

from models import two_conv_net
from tb_convviz.plugin.plugin import ConvVizPlugin
from tb_convviz.read.reader import load
from training import one_thread, train_and_log
from wire import decode_wire as decode

STEPS = [0, 1, 2, 3]
BASE = "/data/plugin/convviz"


def log_run(logdir: Path, model: nn.Module, probe, seed: int, **options) -> None:
    """Four logged steps, each after one full-batch SGD update; `options` go to ConvViz
    (perturbations off unless given)."""
    torch.manual_seed(seed)
    x = torch.randn(8, 3, 8, 8)
    y = torch.randint(0, 2, (8,))
    train_and_log(logdir, model, probe, lambda: [(x, y)], STEPS, lr=0.3, **{"perturbations": False, **options})


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Client:
    """Runs: a, b (same net), narrow (layer "0" with 4 filters, no layer "3"), noprobe, and analysed
    (the same net with perturbation responses, a counterfactual and impact)."""
    d = tmp_path_factory.mktemp("routes")
    with one_thread():
        g = torch.Generator().manual_seed(0)
        probe = (torch.randn(3, 3, 8, 8, generator=g), torch.tensor([0, 1, 0]))
        torch.manual_seed(0)
        log_run(d / "a", two_conv_net((6, 8), classes=2), probe, 0)
        torch.manual_seed(1)
        log_run(d / "b", two_conv_net((6, 8), classes=2), probe, 1)
        narrow = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
        log_run(d / "narrow", narrow, probe, 2)
        log_run(d / "noprobe", two_conv_net((6, 8), classes=2), None, 3)
        torch.manual_seed(4)
        log_run(d / "analysed", two_conv_net((6, 8), classes=2), probe, 4, perturbations={"rotate_probe": True}, impact=True, counterfactuals={"dim": lambda b: 0.5 * b})
    logs = load(d)
    plugin = ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=str(d)))
    return Client(TensorBoardWSGI([plugin]))


def get_ok(client: Client, route: str) -> dict:
    r = client.get(f"{BASE}/{route}")
    assert r.status_code == 200, r.get_data(as_text=True)
    assert r.mimetype == "application/json"
    return r.get_json()


def get_error(client: Client, route: str, status: int) -> str:
    r = client.get(f"{BASE}/{route}")
    assert r.status_code == status, f"{route}: {r.status_code} {r.get_data(as_text=True)[:300]}"
    assert r.mimetype == "application/json"
    body = r.get_json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str) and body["error"]
    return body["error"]


# -- what each route answers ---------------------------------------------------------------------


def test_index_lists_runs_layers_steps_and_probe(client):
    index = get_ok(client, "index")
    runs = {r["run"]: r for r in index["runs"]}
    assert sorted(runs) == ["a", "analysed", "b", "narrow", "noprobe"]
    layers = {layer["name"]: layer for layer in runs["a"]["layers"]}
    assert list(layers) == ["0", "3"]
    assert layers["0"]["steps"] == STEPS
    assert layers["0"]["info"]["filters"] == 6 and layers["0"]["info"]["batchnorm"] == "1"
    assert layers["3"]["info"]["filters"] == 8 and layers["3"]["info"]["kernel_size"] == [3, 3]
    assert runs["a"]["probe"]["n"] == 3 and runs["a"]["probe"]["has_labels"]
    assert runs["noprobe"]["probe"] is None


def test_layer_has_stats_tiles_and_maps(client):
    body = get_ok(client, "layer?run=a&layer=3&step=2")
    assert (body["step"], body["prev_step"], body["first_step"]) == (2, 1, 0)
    for name in ("l2", "mean_abs", "cosine_distance_prev", "norm_change_prev", "act_mean"):
        assert decode(body["stats"][name]).shape == (8,)
    assert decode(body["tiles"]).shape == (8, 1, 3, 3)  # 6 input channels: the grid shows their mean
    assert decode(body["maps"]).shape == (3, 8, 8, 8)
    assert body["map_images"] == [0, 1, 2]
    assert get_ok(client, "layer?run=noprobe&layer=3&step=0")["maps"] is None


def test_filter_detail_slices_effective_maps_history(client):
    body = get_ok(client, "filter?run=a&layer=0&step=3&filter=5")
    assert decode(body["slices"]).shape == (3, 3, 3)
    assert decode(body["effective"]).shape == (3, 3, 3)  # BatchNorm "1" follows layer "0"
    assert decode(body["maps"]).shape == (3, 8, 8)
    history = body["column_history"]
    assert history["l2"]["steps"] == STEPS
    assert len(history["l2"]["values"]) == len(STEPS)
    assert history["cosine_distance_prev"]["values"][0] == pytest.approx(0, abs=1e-6)  # the first step is its own previous
    assert get_ok(client, "filter?run=a&layer=3&step=3&filter=0")["effective"] is None
    assert body["per_class"] is None  # run "a" logged no impact


def test_filter_detail_has_per_class_changes_with_intervals(client):
    per_class = get_ok(client, "filter?run=analysed&layer=3&step=3&filter=2")["per_class"]
    assert per_class["classes"] == [0, 1] and per_class["class_support"] == [2, 1]  # probe labels [0, 1, 0]
    assert len(per_class["d_recall"]) == 2 and len(per_class["d_recall_ci"]) == 4
    for k, n in enumerate(per_class["class_support"]):
        assert per_class["d_recall"][k] * n == pytest.approx(round(per_class["d_recall"][k] * n), abs=1e-9)
        lo, hi = per_class["d_recall_ci"][2 * k : 2 * k + 2]
        assert lo <= per_class["d_recall"][k] <= hi
    assert per_class["detectable_d_recall"] == [None, None]  # 2 and 1 examples: too few to tell


def test_probe_images_and_labels(client):
    body = get_ok(client, "probe?run=a")
    assert decode(body["images"]).shape == (3, 3, 8, 8)
    assert body["labels"] == [0, 1, 0]


def test_compare_epochs_runs_and_basis(client):
    epochs = get_ok(client, "compare?layer=3&run_a=a&step_a=0&run_b=a&step_b=3&align=index")
    assert epochs["basis"] == "kernels" and epochs["match"] == list(range(8))
    assert sorted(epochs["order"]) == list(range(8))
    drift = decode(epochs["metrics"]["cosine_distance"]).tolist()
    assert [drift[i] for i in epochs["order"]] == sorted(drift, reverse=True)
    assert set(epochs["metrics"]) == {"cosine_distance", "norm_change", "act_mean_change"}

    consecutive = get_ok(client, "compare?layer=3&run_a=a&step_a=2&run_b=a&step_b=3&align=index")
    assert consecutive["basis"] == "logged"

    runs = get_ok(client, "compare?layer=0&run_a=a&step_a=3&run_b=b&step_b=3&align=match")
    assert sorted(runs["match"]) == list(range(6))
    assert decode(runs["tiles_b"]).shape == decode(runs["tiles_a"]).shape == (6, 3, 3, 3)
    assert get_ok(client, "compare?layer=0&run_a=a&step_a=3&run_b=b&step_b=3")["align"] == "index"


def arrays_of(body: dict) -> dict[str, np.ndarray]:
    """The analysis answer's arrays (wire arrays, the one transport) as numpy."""
    return {name: decode(a) for name, a in body["arrays"].items()}


def test_every_per_filter_number_logged_is_a_described_column(client):
    """Each built-in column has a label and a description in /index, and every one-value-per-filter
    array the analysed run's records hold is one of /table's columns (or an interval companion)."""
    index = get_ok(client, "index")
    assert index["columns"] and all(c["label"] and c["description"] for c in index["columns"])
    table = get_ok(client, "table?run=analysed&layer=0&step=2")
    served = {c["name"] for c in table["columns"]} | {c["ci"] for c in table["columns"] if c["ci"]}
    assert set(table["values"]) == served
    record_arrays = {}
    for kind in ("filters", "perturbation", "impact"):
        body = get_ok(client, f"{kind}?run=analysed&layer=0&step=2") if kind != "filters" else None
        if body is not None:
            record_arrays.update({n: a["shape"] for n, a in body["arrays"].items()})
    record_arrays.update({n: [6] for n in get_ok(client, "layer?run=analysed&layer=0&step=2")["stats"]})
    per_filter = {n for n, shape in record_arrays.items() if shape == [6]}
    assert per_filter - served == set(), per_filter - served
    by_name = {c["name"]: c for c in table["columns"]}
    assert by_name["d_accuracy"]["ci"] == "d_accuracy_ci" and decode(table["values"]["d_accuracy_ci"]).shape == (6, 2)
    assert by_name["rotation_response"]["record_step"] == 2 and decode(table["values"]["rotation_response"]).shape == (6,)


def test_perturbation_numbers_carry_intervals_over_probe_images_and_counterfactuals_a_test(client):
    """Noise stability, attack change and counterfactual change are declared with a 95% interval
    companion, so /table sends it beside the value (and the filter's history too); a counterfactual's flag
    comes with the p and BH q of its paired test over the probe images."""
    table = get_ok(client, "table?run=analysed&layer=0&step=2")
    by_name = {c["name"]: c for c in table["columns"]}
    for name in ("stability", "fgsm", "pgd", "cf/dim"):
        assert by_name[name]["ci"], name
        values, ci = decode(table["values"][name]), decode(table["values"][by_name[name]["ci"]])
        assert ci.shape == (6, 2) and np.isfinite(ci).all(), name
        assert ((ci[:, 0] <= values + 1e-6) & (values <= ci[:, 1] + 1e-6)).all(), name
    p, q = decode(table["values"]["cf/dim/p"]), decode(table["values"]["cf/dim/q"])
    assert ((0 <= p) & (p <= q + 1e-6) & (q <= 1)).all()
    names = [c["name"] for c in table["columns"]]
    assert names.index("cf/dim/q") == names.index("cf/dim/flag") + 1  # shown next to the flag
    history = get_ok(client, "filter?run=analysed&layer=0&step=1&filter=2")["column_history"]
    assert len(history["stability"]["ci"]) == len(STEPS) and len(history["cf/dim"]["ci"]) == len(STEPS)


def test_perturbation_responses_per_filter(client):
    body = get_ok(client, "perturbation?run=analysed&layer=0&step=2")
    assert (body["run"], body["layer"], body["step"], body["kind"]) == ("analysed", "0", 2, "perturbation")
    a = arrays_of(body)
    angles = len(a["rotation_angles"])
    assert a["tuning"].shape == a["rotation_response"].shape == (6, angles)
    assert a["osi"].shape == a["preferred_orientation"].shape == a["tuning_frequency"].shape == (6,)
    assert np.all((a["osi"] >= 0) & (a["osi"] <= 1))
    assert a["stability"].shape == (6, len(a["noise_sigmas"]))
    assert a["adv_epsilon"].shape == () and a["fgsm"].shape == a["pgd"].shape == (6,)
    for key in ("cf/dim", "cf/dim/cosine", "cf/dim/z", "cf/dim/flag"):
        assert a[key].shape == (6,), key
    assert body["counterfactuals"] == ["dim"]
    assert body["groups"]["orientation"] == ["rotation_angles", "tuning", "osi", "preferred_orientation", "tuning_frequency"]
    assert body["groups"]["shift"] == []  # 2-D images: no shift or reversal
    assert get_ok(client, "perturbation?run=analysed&layer=3&step=0")["arrays"]["tuning"]["shape"] == [8, angles]


def test_impact_per_filter(client):
    a = arrays_of(get_ok(client, "impact?run=analysed&layer=3&step=3"))
    assert a["accuracy"].shape == () and 0 <= a["accuracy"] <= 1
    for key in ("d_accuracy", "d_confidence", "d_loss", "flips", "taylor_d_loss", "class_selectivity", "topk_class", "topk_flag"):
        assert a[key].shape == (8,), key
    # per class only as exact, sparse flips: nothing sized filters × classes
    assert a["clean_pred"].shape == (3,) and a["flip_filter"].shape == a["flip_pred"].shape
    assert a["exact"].shape == (8,) and a["exact"].all()  # 8 filters fit the exact-ablation budget
    assert a["d_accuracy_ci"].shape == a["discordant"].shape == (8, 2)
    assert a["p_value"].shape == a["significant"].shape == (8,)
    assert a["topk_index"].shape == a["topk_label"].shape == (8, 3)  # top-k capped at the 3 probe images
    assert set(a["topk_index"].ravel().tolist()) <= {0, 1, 2}
    assert a["taylor_spearman"].shape == ()


def test_filter_history_has_analysis_scalars(client):
    history = get_ok(client, "filter?run=analysed&layer=0&step=1&filter=2")["column_history"]
    for key in ("d_accuracy", "taylor_d_loss", "osi", "cf/dim"):
        assert history[key]["steps"] == STEPS
        assert len(history[key]["values"]) == len(STEPS), key
    assert len(history["d_accuracy"]["ci"]) == len(STEPS) and all(len(pair) == 2 for pair in history["d_accuracy"]["ci"])
    assert "osi" not in get_ok(client, "filter?run=a&layer=0&step=1&filter=2")["column_history"]


def test_dashboard_files_are_served(client):
    r = client.get(f"{BASE}/index.js")
    assert r.status_code == 200 and r.mimetype == "text/javascript"
    assert b"export function render" in r.get_data()
    for path in ("static/store.js", "static/views/grid.js", "static/convviz.css"):
        r = client.get(f"{BASE}/{path}")
        assert r.status_code == 200, path
    assert client.get(f"{BASE}/static/convviz.css").mimetype == "text/css"


# -- bad parameters: 4xx with a message, never 500 ----------------------------------------------

BAD = [
    # run
    ("layer?layer=0&step=0", 400, "run"),
    ("layer?run=&layer=0&step=0", 400, "run"),
    ("layer?run=nope&layer=0&step=0", 404, "nope"),
    ("layer?run=%3Cimg%20src%3Dx%3E&layer=0&step=0", 404, "<img src=x>"),
    # layer
    ("layer?run=a&step=0", 400, "layer"),
    ("layer?run=a&layer=9&step=0", 404, "'9'"),
    ("layer?run=a&layer=_run&step=0", 404, "_run"),
    ("layer?run=narrow&layer=3&step=0", 404, "'3'"),
    # step
    ("layer?run=a&layer=0", 400, "step"),
    ("layer?run=a&layer=0&step=", 400, "step"),
    ("layer?run=a&layer=0&step=1.5", 400, "integer"),
    ("layer?run=a&layer=0&step=two", 400, "integer"),
    ("layer?run=a&layer=0&step=99", 404, "99"),
    ("layer?run=a&layer=0&step=-1", 404, "-1"),
    ("layer?run=a&layer=0&step=99999999999999999999999", 404, "step"),
    # filter
    ("filter?run=a&layer=0&step=0", 400, "filter"),
    ("filter?run=a&layer=0&step=0&filter=6", 400, "[0, 6)"),
    ("filter?run=a&layer=0&step=0&filter=-1", 400, "filter"),
    ("filter?run=a&layer=0&step=0&filter=x", 400, "integer"),
    ("filter?run=a&layer=0&step=7&filter=0", 404, "7"),
    # perturbation and impact: off for the run, or no record at that step
    ("perturbation?run=a&layer=0&step=0", 404, "'perturbation'"),
    ("impact?run=a&layer=0&step=0", 404, "'impact'"),
    ("impact?run=noprobe&layer=3&step=0", 404, "'impact'"),
    ("impact?run=analysed&layer=0&step=9", 404, "9"),
    ("perturbation?run=analysed&layer=0", 400, "step"),
    ("impact?run=analysed&layer=7&step=0", 404, "'7'"),
    # probe
    ("probe", 400, "run"),
    ("probe?run=nope", 404, "nope"),
    ("probe?run=noprobe", 404, "without a probe"),
    # compare
    ("compare?layer=0&run_b=b&step_a=0&step_b=0", 400, "run_a"),
    ("compare?layer=0&run_a=a&step_a=0&step_b=0", 400, "run_b"),
    ("compare?layer=0&run_a=a&run_b=zz&step_a=0&step_b=0", 404, "zz"),
    ("compare?run_a=a&run_b=b&step_a=0&step_b=0", 400, "layer"),
    ("compare?layer=0&run_a=a&run_b=b&step_a=x&step_b=0", 400, "step_a"),
    ("compare?layer=0&run_a=a&run_b=b&step_a=0", 400, "step_b"),
    ("compare?layer=0&run_a=a&run_b=b&step_a=0&step_b=42", 404, "42"),
    ("compare?layer=0&run_a=a&run_b=b&step_a=0&step_b=0&align=closest", 400, "align"),
    # the layer exists in one run only / differs between the runs
    ("compare?layer=3&run_a=a&run_b=narrow&step_a=0&step_b=0", 404, "narrow"),
    ("compare?layer=0&run_a=a&run_b=narrow&step_a=0&step_b=0&align=match", 400, "differs"),
    ("compare?layer=0&run_a=narrow&run_b=a&step_a=0&step_b=0", 400, "differs"),
]


@pytest.mark.parametrize("route,status,mentions", BAD, ids=[b[0] for b in BAD])
def test_bad_parameters_are_4xx_with_a_message(client, route, status, mentions):
    assert mentions in get_error(client, route, status)


TRAVERSAL = [
    "static/../../setup.py",
    "static/..%2F..%2Fsetup.py",
    "static/%2e%2e/%2e%2e/setup.py",
    "static/../../tb_convviz/__init__.py",
    "static/..%2f..%2ftb_convviz%2fplugin%2fplugin.py",
    "static//etc/passwd",
    "static/%2Fetc%2Fpasswd",
    "static/views/../../../README.md",
    "static/",
    "static/views",
    "static/missing.js",
    "static/store.js%00.css",
    "static/..",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_static_serves_nothing_outside_the_frontend(client, path):
    r = client.get(f"{BASE}/{path}")
    assert 400 <= r.status_code < 500, f"{path}: {r.status_code}"
    assert b"setuptools" not in r.get_data() and b"root:" not in r.get_data()


@pytest.mark.parametrize("route", ["index", "layer", "filter", "probe", "compare", "perturbation", "impact"])
@pytest.mark.parametrize(
    "query",
    [
        "",
        "?run=a",
        "?run=a&layer=0",
        "?run=a&layer=0&step=0&filter=0&run_a=a&run_b=b&step_a=0&step_b=0&align=index",
        "?run=a&run=b&layer=0&layer=3&step=0&step=1",
        "?run=%00&layer=%ff&step=%20",
        "?run=a&layer=0&step=0x10&filter=1e3",
    ],
)
def test_no_query_makes_a_500(client, route, query):
    r = client.get(f"{BASE}/{route}{query}")
    assert r.status_code < 500, f"{route}{query}: {r.get_data(as_text=True)[:300]}"
    assert r.mimetype == "application/json"
    if r.status_code >= 400:
        assert r.get_json()["error"]


def test_a_request_lists_the_logs_records_once_however_many_layers(tmp_path, monkeypatch):
    """/index asks every layer's kinds and steps: the records are listed and sorted by kind once
    per request (per layer, that was much of /index's time on a ResNet-50's 53 layers), and the
    next request lists anew, so steps written in between show up."""
    from tb_convviz.read import reader as reader_module

    with one_thread():
        log_run(tmp_path / "run", two_conv_net((6, 8), classes=2), None, 0)
    listed = []
    real = reader_module.ConvVizReader._list
    monkeypatch.setattr(reader_module.ConvVizReader, "_list", lambda self, run: listed.append(run) or real(self, run))
    logs = load(tmp_path)
    client = Client(TensorBoardWSGI([ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=str(tmp_path)))]))
    body = get_ok(client, "index")
    assert len(body["runs"][0]["layers"]) == 2 and body["runs"][0]["shape_texture"] is False
    assert listed == [None]  # every run's records at once, then every layer's kinds from that
    get_ok(client, "layer?run=run&layer=0&step=1")
    assert len(listed) == 2  # a new request lists anew, once
