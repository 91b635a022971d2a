"""The detail panel's history from per-layer columns: cached answers equal the uncached path and
the values the logs hold, a newly written step shows up, and the cache keeps to its byte budget."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from models import two_conv_net
from tb_convviz import ConvViz
from tb_convviz.schema import format as fmt
from tb_convviz.plugin import history, payloads
from tb_convviz.plugin.history import HistoryCache, stack_columns
from tb_convviz.plugin.plugin import ConvVizPlugin
from tb_convviz.read.reader import ConvVizReader, Logs
from tb_convviz.read.store import RecordStore
from training import one_thread, sgd_step

RUN = "analysed"
STEPS = [0, 1, 2, 3]
BASE = "/data/plugin/convviz"
OPTIONS = {"perturbations": {"rotate_probe": True}, "impact": True}


@pytest.fixture
def stream_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """(layer, kind) of every stream the history cache reads whole, from now on."""
    reads: list[tuple[str, str]] = []
    read = history.read_columns

    def counted(reader, run, layer, kind, n_filters):
        reads.append((layer, kind))
        return read(reader, run, layer, kind, n_filters)

    monkeypatch.setattr(history, "read_columns", counted)
    return reads


class Logdir:
    """A run written step by step by a live ConvViz, read through a multiplexer reloaded on demand."""

    def __init__(self, root: Path):
        g = torch.Generator().manual_seed(0)
        probe = (torch.randn(3, 3, 8, 8, generator=g), torch.tensor([0, 1, 0]))
        self.x, self.y = torch.randn(8, 3, 8, 8, generator=g), torch.tensor([0, 1] * 4)
        torch.manual_seed(0)
        self.model = two_conv_net((6, 8), classes=2)
        self.viz = ConvViz(str(root / RUN), probe=probe, **OPTIONS)
        self.root = root
        self.mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={fmt.PLUGIN_NAME: 0})
        self.reader = Logs(data_provider.MultiplexerDataProvider(self.mux, str(root)), store=RecordStore(root))

    def log(self, steps: list[int]) -> None:
        with one_thread():
            for step in steps:
                sgd_step(self.model, self.x, self.y, lr=0.3)
                self.viz.log(self.model, step)
            self.viz.flush()
        self.mux.AddRunsFromDirectory(str(self.root))  # the run's folder exists from its first step on
        self.mux.Reload()


def _logdir(root: Path, steps: list[int]) -> Logdir:
    logdir = Logdir(root)
    logdir.log(steps)
    return logdir


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Logdir:
    logdir = _logdir(tmp_path_factory.mktemp("history"), STEPS)
    logdir.viz.close()
    return logdir


def _client(reader: ConvVizReader) -> Client:
    plugin = ConvVizPlugin(base_plugin.TBContext(data_provider=reader._provider, logdir=reader.logdir))
    return Client(TensorBoardWSGI([plugin]))


def _get(client: Client, route: str) -> dict:
    r = client.get(f"{BASE}/{route}")
    assert r.status_code == 200, r.get_data(as_text=True)
    return r.get_json()


def _uncached(reader: ConvVizReader, layer: str, step: int, index: int) -> dict:
    """The answer read from every step's records, as the route's JSON would carry it."""
    return json.loads(json.dumps(payloads.filter_detail(reader, RUN, layer, step, index), allow_nan=False))


def test_another_filter_and_step_of_the_layer_answer_as_the_uncached_path(logged, stream_reads):
    client = _client(logged.reader)
    first = _get(client, f"filter?run={RUN}&layer=3&step=3&filter=2")
    assert sorted(stream_reads) == [("3", fmt.KIND_FILTERS), ("3", fmt.KIND_IMPACT), ("3", fmt.KIND_PERTURBATION)]
    for step, index in ((3, 5), (1, 0), (0, 7)):
        cached = _get(client, f"filter?run={RUN}&layer=3&step={step}&filter={index}")
        assert len(stream_reads) == 3  # served from the columns, not the records
        uncached = _uncached(logged.reader, "3", step, index)
        assert cached == uncached
        # The values the logs hold for this filter, step by step, not the first request's filter.
        history = cached["column_history"]
        assert history["l2"]["steps"] == STEPS
        assert history["l2"]["values"] == [float(logged.reader.filter_stats(RUN, "3", s)["l2"][index]) for s in STEPS]
        assert history["l2"]["values"] != first["column_history"]["l2"]["values"]
        impact = [logged.reader.impact(RUN, "3", s) for s in STEPS]
        assert history["taylor_d_loss"]["steps"] == STEPS
        assert history["taylor_d_loss"]["values"] == [float(i["taylor_d_loss"][index]) for i in impact]
        assert history["osi"]["values"] == [
            float(logged.reader.perturbation(RUN, "3", s)["osi"][index]) for s in STEPS
        ]


def test_columns_are_read_once_per_stream_and_run_state(logged, stream_reads):
    cache = HistoryCache()
    reader = logged.reader
    for index in (0, 4):
        columns = cache.columns(reader, RUN, "0", fmt.KIND_FILTERS, 6)
        assert columns.of_filter(index)["mean_abs"].tolist() == [
            reader.filter_stats(RUN, "0", s)["mean_abs"][index] for s in STEPS
        ]
    assert stream_reads == [("0", fmt.KIND_FILTERS)]


def test_a_newly_written_step_appears_in_the_history(tmp_path):
    logdir = _logdir(tmp_path, [0, 1, 2])
    cache = HistoryCache()
    before = payloads.filter_detail(logdir.reader, RUN, "0", 2, 1, cache)["column_history"]
    assert before["l2"]["steps"] == before["d_loss"]["steps"] == [0, 1, 2]
    logdir.log([3])
    logdir.viz.close()
    after = payloads.filter_detail(logdir.reader, RUN, "0", 3, 1, cache)["column_history"]
    assert after["l2"]["steps"] == after["d_loss"]["steps"] == after["osi"]["steps"] == [0, 1, 2, 3]
    assert after == _uncached(logdir.reader, "0", 3, 1)["column_history"]
    assert after["l2"]["values"][3] == float(logdir.reader.filter_stats(RUN, "0", 3)["l2"][1])
    assert after["l2"]["values"][:3] == before["l2"]["values"]


def test_cache_keeps_to_its_byte_budget_least_recent_out(logged, stream_reads):
    reader = logged.reader
    one_layer = HistoryCache().columns(reader, RUN, "3", fmt.KIND_FILTERS, 8).nbytes
    cache = HistoryCache(max_bytes=one_layer)
    stream_reads.clear()
    cache.columns(reader, RUN, "0", fmt.KIND_FILTERS, 6)
    cache.columns(reader, RUN, "3", fmt.KIND_FILTERS, 8)  # over budget: layer "0" goes
    cache.columns(reader, RUN, "3", fmt.KIND_FILTERS, 8)
    cache.columns(reader, RUN, "0", fmt.KIND_FILTERS, 6)
    assert stream_reads == [("0", fmt.KIND_FILTERS), ("3", fmt.KIND_FILTERS), ("0", fmt.KIND_FILTERS)]


def test_a_name_missing_from_some_steps_has_rows_for_the_steps_that_hold_it():
    a0, a1, a2 = (np.full(3, v, np.float32) for v in (0.0, 1.0, 2.0))
    columns = stack_columns([(0, {"a": a0, "b": a0 + 10}), (5, {"a": a1}), (9, {"a": a2, "b": a2 + 10})])
    assert columns.steps == [0, 5, 9]
    assert columns.values["a"].shape == (3, 3) and columns.values["b"].shape == (2, 3)
    assert columns.of_filter(1)["b"].tolist() == [10.0, 12.0]
    assert columns.nbytes == (9 + 6) * 4
