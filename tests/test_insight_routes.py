"""The routes behind the tab's shape-vs-texture, footprint and probe-size insights, over logs the
real callback wrote."""
from __future__ import annotations

import pytest
import torch
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from models import two_conv_net
from tb_convviz import ConvViz, load
from tb_convviz.plugin.plugin import ConvVizPlugin

BASE = "/data/plugin/convviz"


@pytest.fixture(scope="module")
def client(tmp_path_factory) -> Client:
    d = tmp_path_factory.mktemp("insights")
    g = torch.Generator().manual_seed(3)
    probe = (torch.randn(8, 3, 16, 16, generator=g), torch.arange(8) % 2)
    torch.manual_seed(0)
    model = two_conv_net((6, 8), classes=2)
    with ConvViz(d / "st", probe=probe, perturbations={"shape_texture": True}, impact=True, background=False) as viz:
        viz.log(model, 0)
        viz.log(model, 1)
    with ConvViz(d / "plain", probe=probe, perturbations=False, background=False) as viz:
        viz.log(model, 0)
    logs = load(d)
    return Client(TensorBoardWSGI([ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=str(d)))]))


def get(client: Client, route: str, status: int = 200) -> dict:
    r = client.get(f"{BASE}/{route}")
    assert r.status_code == status, r.get_data(as_text=True)[:300]
    return r.get_json()


def test_shape_texture_distribution_per_layer(client):
    answer = get(client, "shape_texture?run=st&step=1")
    assert answer["layers"] == ["0", "3"] and answer["filters"] == [6, 8]
    assert [sum(h) for h in answer["histograms"]] == [6, 8]
    assert answer["edges"][0] == -1 and answer["edges"][-1] == 1
    assert all(-1 <= m <= 1 for m in answer["medians"])


def test_shape_texture_missing_is_a_404_saying_how_to_log_it(client):
    assert "shape_texture" in get(client, "shape_texture?run=plain&step=0", 404)["error"]
    assert get(client, "shape_texture?run=st&step=x", 400)["error"]


def test_impact_answer_says_how_many_examples_an_effect_needs(client):
    needed = get(client, "impact?run=st&layer=3&step=1")["examples_needed"]
    assert list(needed) == ["0.05", "0.1", "0.2", "0.5"]
    assert needed["0.05"] > needed["0.1"] > needed["0.2"] > needed["0.5"] >= 6


def test_layer_answer_carries_the_footprint_hint(client):
    footprint = get(client, "layer?run=st&layer=0&step=1")["footprint"]
    assert footprint["step"] == 1 and len(footprint["ring_energy"]) == 2
    assert "hint" in footprint
