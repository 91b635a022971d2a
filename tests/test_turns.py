"""A large model's layers take turns at perturbation responses and response profiles
(`response_filters`), and the routes answer a step with each layer's last record before it."""
from __future__ import annotations

from pathlib import Path
from urllib.parse import urlencode

import pytest
import torch
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from models import two_conv_net
from tb_convviz import ConvViz
from tb_convviz.schema import format as fmt
from tb_convviz.analysis.turns import layer_turns
from tb_convviz.read.memo import Memo
from tb_convviz.plugin.plugin import ConvVizPlugin
from tb_convviz.read.reader import load
from training import one_thread, sgd_step

BASE = "/data/plugin/convviz"


def test_turns_balance_filters_and_keep_model_order():
    filters = {"a": 64, "b": 512, "c": 256, "d": 256, "e": 2048}
    turns = layer_turns(filters, 1024)
    assert turns == [["e"], ["b"], ["a", "c"], ["d"]]  # 3,136 filters: 4 turns, largest layers first
    assert sorted(n for t in turns for n in t) == sorted(filters)
    assert layer_turns(filters, None) == [list(filters)] == layer_turns(filters, 3136)


def test_response_filters_must_be_a_positive_integer(tmp_path):
    with pytest.raises(ValueError, match="response_filters"):
        ConvViz(str(tmp_path), response_filters=0)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Layers "0" (6 filters) and "3" (8) under response_filters=8: two turns, ["3"] then ["0"];
    logs 0 (first) and 4 (final) record both."""
    d = tmp_path_factory.mktemp("turns")
    torch.manual_seed(0)
    model = two_conv_net((6, 8), classes=2)
    g = torch.Generator().manual_seed(0)
    probe = (torch.randn(6, 3, 8, 8, generator=g), torch.tensor([0, 1, 0, 1, 0, 1]))
    x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 2, (8,), generator=g)
    with one_thread(), ConvViz(str(d / "run"), probe=probe, response_filters=8, background=False,
                               perturbations={"shape_texture": True}) as viz:
        for step in range(5):
            sgd_step(model, x, y, 0.3)
            viz.log(model, step, final=step == 4)
    return d


def test_each_layer_is_recorded_on_its_turn_and_on_full_logs(logdir):
    logs = load(logdir)
    for kind in (fmt.KIND_PERTURBATION, fmt.KIND_PROFILE):
        assert logs.steps("run", "0", kind) == [0, 1, 3, 4], kind
        assert logs.steps("run", "3", kind) == [0, 2, 4], kind
    assert logs.steps("run", fmt.RUN_LAYER, fmt.KIND_GRAM) == [0, 1, 2, 3, 4]  # CKA: every layer, every step
    assert logs.steps("run", "3") == [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def client(logdir) -> Client:
    plugin = ConvVizPlugin(base_plugin.TBContext(data_provider=load(logdir)._provider, logdir=str(logdir)))
    return Client(TensorBoardWSGI([plugin]))


def get(client: Client, route: str, status: int = 200, **params) -> dict:
    r = client.get(f"{BASE}/{route}?{urlencode(params)}")
    assert r.status_code == status, r.get_data(as_text=True)
    return r.get_json()


def test_routes_answer_with_the_layers_last_responses_and_say_which(client, logdir):
    own = get(client, "perturbation", run="run", layer="3", step=2)
    assert own["step"] == own["record_step"] == 2
    earlier = get(client, "perturbation", run="run", layer="3", step=3)
    assert earlier["step"] == 3 and earlier["record_step"] == 2
    assert earlier["arrays"] == own["arrays"]
    st = get(client, "shape_texture", run="run", step=3)
    assert dict(zip(st["layers"], st["steps"])) == {"0": 3, "3": 2}
    # Pairing by activations at a step where layer "3" has no profile of its own uses its last one.
    logs = load(logdir)
    assert logs.profile_step("run", "3", 3) == 2
    pairs = get(client, "compare", layer="3", run_a="run", step_a=3, run_b="run", step_b=1, align="match")
    assert pairs["match_basis"] == "activations"


def test_a_matching_is_solved_once_per_pair_of_profile_records(logdir, monkeypatch):
    import tb_convviz.read.reader as reader_module

    solved = []
    real = reader_module.pair_filters
    monkeypatch.setattr(reader_module, "pair_filters", lambda a, b: solved.append(1) or real(a, b))
    monkeypatch.setattr(reader_module, "_MATCHES", Memo(4))  # not what earlier tests solved
    logs = load(logdir)
    first = logs.match("run", "run", "3", 3, 1)
    again = logs.match("run", "run", "3", 2, 1)  # step 3 reads layer "3"'s profile of step 2: the same records
    assert len(solved) == 1
    assert (first[0] == again[0]).all() and not first[0].flags.writeable
    logs.match("run", "run", "3", 4, 1)
    assert len(solved) == 2
