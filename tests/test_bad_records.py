"""A bad record is that record's problem: crafted records in one run of a two-run logdir (a version
that is not a number, `[]` content, a newer version, an unknown kind, truncated payloads with valid
CRCs, a field of the wrong type, a layer's group of records cut short or holding a kind this
version does not know) leave every route of the other run answering exactly as before,
the bad run's routes answer what they can or a 4xx JSON, `/index` lists each problem, `load()`
warns once per bad record, and nothing answers 500."""
from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.compat.proto import event_pb2
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

import tb_convviz
from models import two_conv_net
from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz.plugin.plugin import ConvVizPlugin
from tb_convviz.read.reader import load
from tb_convviz.schema import groups
from tb_convviz.write.writer import group_summary, record_summary, tfrecord
from training import one_thread, train_and_log
from user_metrics import HOYER

BASE = "/data/plugin/convviz"
STEPS = [0, 1, 2]
BAD_STEP = 10  # a whole (committed) step whose records are broken
GROUP_STEP = 11  # a whole step whose groups (`schema.groups`) are: layer 3's cut short, layer 0's holding a later kind
CONTENTS = {  # tag → plugin content of a record no reader can use
    "0/odd_version": json.dumps({"version": "2", "kind": "maps"}),
    "0/listed": "[]",
    "0/future": json.dumps({"version": fmt.FORMAT_VERSION + 1, "kind": "maps"}),
    "0/sparkles": json.dumps({"version": fmt.FORMAT_VERSION, "kind": "sparkles"}),
}


STAMP = time.time()  # one version of the crafted step: its records and its commit share a wall time


def crafted_event(tag_layer: str, kind: str, step: int, payload: bytes, content: str | None = None) -> bytes:
    summary = record_summary(tag_layer, kind, payload)
    if content is not None:
        summary.value[0].metadata.plugin_data.content = content.encode()
    return tfrecord(event_pb2.Event(wall_time=STAMP, step=step, summary=summary).SerializeToString())


def crafted_group(layer: str, step: int, parts: dict[str, bytes], cut: int = 0) -> bytes:
    """A group event of `parts`, its payload cut `cut` bytes short (its CRC valid)."""
    summary = group_summary(layer, parts)
    tensor = summary.value[0].tensor
    tensor.string_val[0] = tensor.string_val[0][: len(tensor.string_val[0]) - cut]
    return tfrecord(event_pb2.Event(wall_time=STAMP, step=step, summary=summary).SerializeToString())


def add_bad_records(run_dir: Path) -> None:
    """A second event file in the run: unreadable contents, and a committed step whose filters,
    profile and Gram records are cut short (the CRC of each is valid: only the bundle is short)."""
    logs = load(run_dir.parent)
    good = logs.bundle(run_dir.name, "3", fmt.KIND_FILTERS, STEPS[-1])
    filters = fmt.encode_bundle({n: ("f32", good.array(n), 0) for n in good.names() if n != "tiles"}, good.meta)
    profile = records.profile_record(np.ones((5, 6), np.float32))
    gram = records.gram_record({"0": np.eye(6), "3": np.eye(6)})
    wrong_info = fmt.encode_bundle({"l2": ("f32", np.ones(4, np.float32), 0)}, {"info": "four filters"})
    events = [crafted_event(*tag.rsplit("/", 1), STEPS[-1], b"", content) for tag, content in CONTENTS.items()]
    layer0 = logs._record_bytes(run_dir.name, next(d for d in logs._series(run_dir.name, "0", fmt.KIND_FILTERS) if d.step == STEPS[-1]))
    events += [
        crafted_group("3", GROUP_STEP, {fmt.KIND_FILTERS: filters}, cut=5),
        crafted_group("0", GROUP_STEP, {fmt.KIND_FILTERS: layer0, "sparkles": b"later"}),
        crafted_event(fmt.RUN_LAYER, fmt.KIND_COMMIT, GROUP_STEP, records.commit_record(2)),
        crafted_event("3", fmt.KIND_FILTERS, BAD_STEP, filters[: len(filters) - 7]),
        crafted_event("0", fmt.KIND_FILTERS, BAD_STEP, wrong_info),
        crafted_event("3", fmt.KIND_PROFILE, BAD_STEP, profile[:-9]),
        crafted_event(fmt.RUN_LAYER, fmt.KIND_GRAM, BAD_STEP, gram[:40]),
        crafted_event(fmt.RUN_LAYER, fmt.KIND_COMMIT, BAD_STEP, records.commit_record(4)),
    ]
    (run_dir / "events.out.tfevents.9999999999.crafted").write_bytes(b"".join(events))


@pytest.fixture(scope="module")
def logdirs(tmp_path_factory):
    """`alone`: the good run by itself; `mixed`: the same run beside a run with bad records."""
    alone, mixed = tmp_path_factory.mktemp("alone"), tmp_path_factory.mktemp("mixed")
    x, y = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2] * 2)
    with one_thread():
        for run in ("good", "bad"):
            torch.manual_seed(0)
            train_and_log(alone / run if run == "good" else mixed / run, two_conv_net((4, 5), classes=3), (x, y),
                          lambda: [(x, y)], STEPS, lr=0.3, impact=True, metrics=[HOYER],
                          perturbations={"shape_texture": True}, response_filters=None)
    shutil.copytree(alone / "good", mixed / "good")
    add_bad_records(mixed / "bad")
    return alone, mixed


def client_for(logdir: Path) -> Client:
    with warnings.catch_warnings(record=True):  # load() warns of the bad records: tested below
        warnings.simplefilter("always")
        logs = load(logdir)
    return Client(TensorBoardWSGI([ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=str(logdir)))]))


def routes(run: str, step: int) -> list[str]:
    one = f"run={run}&layer=3&step={step}"
    two = f"run_a={run}&step_a={step}&run_b={run}&step_b={STEPS[0]}"
    return [
        f"layer?{one}", f"filter?{one}&filter=1", f"table?{one}", f"perturbation?{one}", f"impact?{one}",
        f"probe?run={run}", f"compare?layer=3&{two}&align=match", f"cka_layers?{two}", f"cka_epochs?run={run}&layer=3",
        f"cka_final?run={run}", f"embedding?run={run}&layer=3", f"shape_texture?run={run}&step={step}",
        f"layer?run={run}&layer=0&step={step}", f"filter?run={run}&layer=0&step={step}&filter=0",
        f"findings?run={run}&step={step}",
    ]


def test_the_good_run_answers_exactly_as_without_the_bad_one(logdirs):
    alone, mixed = (client_for(d) for d in logdirs)
    for step in STEPS:
        for route in routes("good", step):
            a, b = alone.get(f"{BASE}/{route}"), mixed.get(f"{BASE}/{route}")
            assert a.status_code == 200, (route, a.get_data(as_text=True))
            assert b.status_code == 200 and b.get_json() == a.get_json(), route
    index_alone, index_mixed = (c.get(f"{BASE}/index").get_json() for c in (alone, mixed))
    assert [r for r in index_mixed["runs"] if r["run"] == "good"] == index_alone["runs"]


def test_the_bad_run_answers_what_it_can_and_never_500(logdirs):
    mixed = client_for(logdirs[1])
    for step in (*STEPS, BAD_STEP):
        for route in routes("bad", step):
            r = mixed.get(f"{BASE}/{route}")
            assert r.status_code != 500 and r.mimetype == "application/json", (route, r.get_data(as_text=True))
            if r.status_code >= 400:
                assert 400 <= r.status_code < 500 and r.get_json()["error"], route
            elif step in STEPS and route.startswith(("layer?", "table?", "impact?", "probe?")):
                assert r.get_json(), route
    # The whole steps read as before: the detail's history skips the cut step, CKA over epochs too.
    detail = mixed.get(f"{BASE}/filter?run=bad&layer=3&step=2&filter=1").get_json()
    assert detail["column_history"]["hoyer"]["steps"] == STEPS
    assert mixed.get(f"{BASE}/cka_epochs?run=bad&layer=3").get_json()["steps"] == STEPS
    assert mixed.get(f"{BASE}/layer?run=bad&layer=3&step={BAD_STEP}").status_code == 404
    # A group cut short costs its layer's records of that step; a kind this version does not know
    # costs that kind alone: the layer's filters beside it read as the step they were copied from.
    assert mixed.get(f"{BASE}/layer?run=bad&layer=3&step={GROUP_STEP}").status_code == 404
    assert mixed.get(f"{BASE}/layer?run=bad&layer=0&step={GROUP_STEP}").get_json()["stats"] == \
        mixed.get(f"{BASE}/layer?run=bad&layer=0&step={STEPS[-1]}").get_json()["stats"]


def test_index_lists_each_problem_once(logdirs):
    mixed = client_for(logdirs[1])
    for route in (*routes("bad", BAD_STEP), *routes("bad", GROUP_STEP)):  # meet the cut records
        mixed.get(f"{BASE}/{route}")
    problems = mixed.get(f"{BASE}/index").get_json()["problems"]
    by_tag = {(p["tag"], p["step"]): p["reason"] for p in problems}
    assert all(p["run"] == "bad" for p in problems)
    assert "not an integer" in by_tag[("0/odd_version", None)]
    assert "not an object" in by_tag[("0/listed", None)]
    assert "newer" in by_tag[("0/future", None)]
    assert "'sparkles'" in by_tag[("0/sparkles", None)]
    assert "truncated" in by_tag[("3/filters", BAD_STEP)]
    assert "truncated" in by_tag[("3/profile", BAD_STEP)]
    assert ("_run/gram", BAD_STEP) in by_tag
    assert "truncated" in by_tag[("3/filters", GROUP_STEP)]
    assert "'sparkles'" in by_tag[(groups.group_tag("0", [fmt.KIND_FILTERS, "sparkles"]), None)]
    assert len(problems) == len(by_tag)


def test_index_says_which_version_serves_and_wrote_each_run_and_which_runs_are_newer(logdirs):
    index = client_for(logdirs[1]).get(f"{BASE}/index").get_json()
    assert index["version"] == tb_convviz.__version__
    assert {r["run"]: r["writer"] for r in index["runs"]} == {"bad": tb_convviz.__version__, "good": tb_convviz.__version__}
    # The crafted "0/future" record names no writer: nothing says which version to install.
    assert index["newer_logs"] == [{"run": "bad", "format_version": fmt.FORMAT_VERSION + 1, "writer": None}]
    assert client_for(logdirs[0]).get(f"{BASE}/index").get_json()["newer_logs"] == []


def test_load_warns_once_per_bad_record_and_reads_the_rest(logdirs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logs = load(logdirs[1])
        assert logs.runs() == ["bad", "good"]
        for _ in range(2):
            assert "hoyer" in logs.filter_table("bad", "3", STEPS[-1])
            with pytest.raises(LookupError, match="unreadable"):
                logs.filter_stats("bad", "3", BAD_STEP)
            with pytest.raises(LookupError, match="truncated"):
                logs.filter_stats("bad", "3", GROUP_STEP)
    skipped = [str(w.message) for w in caught if "skipped record" in str(w.message)]
    assert len(skipped) == len(set(skipped)) == len(CONTENTS) + 3  # + the group holding a later kind
    assert any("'3/filters'" in m and f"step {BAD_STEP}" in m for m in skipped)
