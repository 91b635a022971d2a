"""Bulky records in a sidecar file per run, references in TensorBoard's events, one event per layer
and step: every reader reads both this layout and logs written before it, and a damaged sidecar
costs its own records only."""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins import base_plugin
from torch import nn
from werkzeug.test import Client

from tbserver import get_json, tensorboard, wait_for
from diskfull import writes_cut_short
from tb_convviz import ConvViz, load
from tb_convviz.plugin.plugin import ConvVizPlugin
from tb_convviz.schema import format as fmt
from tb_convviz.schema import groups, sidecar
from tb_convviz.write import callback
from tb_convviz.write.writer import RecordWriter

BASE = "/data/plugin/convviz"
STEPS = [0, 1, 2]
PROBE = (torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 0, 1]))


def _log(folder: Path, **options) -> None:
    """The same run each time: a net with records over `sidecar.INLINE_MAX` (maps, kernels)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3), nn.ReLU(), nn.Conv2d(32, 16, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
    with ConvViz(folder, probe=PROBE, perturbations=False, background=False, **options) as viz:
        for step in STEPS:
            with torch.no_grad():
                model[0].weight.mul_(1.1)
            viz.log(model, step)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory) -> Path:
    """Run "new" as ConvViz writes now; run "old" as logs were written before sidecars and groups
    (every record inside an event of its own: what that writer wrote, byte for byte)."""
    root = tmp_path_factory.mktemp("sidecar") / "logs"
    _log(root / "new")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(callback, "RecordWriter", functools.partial(RecordWriter, sidecar=False))
        _log(root / "old")
    return root


def _files(folder: Path) -> dict[str, int]:
    return {("events" if "tfevents" in p.name else "sidecar"): p.stat().st_size for p in folder.iterdir()}


def test_bulky_records_live_in_the_sidecar_and_events_hold_references(logdir):
    new, old = _files(logdir / "new"), _files(logdir / "old")
    assert set(old) == {"events"} and set(new) == {"events", "sidecar"}
    assert new["events"] < 0.15 * old["events"]  # what TensorBoard holds in memory (small records stay inline)
    assert new["events"] + new["sidecar"] == pytest.approx(old["events"], rel=0.1)


def _summary_tags(folder: Path) -> list[tuple[int, str]]:
    """(step, tag) of every summary value in the run's event files, in file order."""
    out = []
    for path in sorted(folder.glob("*tfevents*")):
        for event in EventFileLoader(str(path)).Load():
            out += [(event.step, value.tag) for value in event.summary.value]
    return out


def test_a_step_is_one_event_per_layer_then_its_commit(logdir):
    """TensorBoard's Python loader holds ~1 KB of objects per event, whatever it carries: a step's
    records travel in one event per layer (`schema.groups`), not one per record."""
    commit = fmt.tag_for(fmt.RUN_LAYER, fmt.KIND_COMMIT)
    new, old = _summary_tags(logdir / "new"), _summary_tags(logdir / "old")
    for step in STEPS:
        tags = [t for s, t in new if s == step]
        assert tags[-1] == groups.COMMIT_TAG
        assert sorted(fmt.parse_tag(t)[0] for t in tags[:-1]) == ["0", "2", fmt.RUN_LAYER]
        assert all(groups.is_group_tag(t) for t in tags[:-1])
        # the same records as the older layout's one event each
        kinds = sorted(f"{fmt.parse_tag(t)[0]}/{k}" for t in tags[:-1] for k in fmt.parse_tag(t)[1][1:].split("+"))
        assert kinds == sorted(t for s, t in old if s == step and t != commit)
    assert groups.group_tag("0", [fmt.KIND_KERNELS, fmt.KIND_FILTERS, fmt.KIND_MAPS, fmt.KIND_PROFILE]) in {t for _, t in new}


def test_load_reads_both_layouts_alike(logdir):
    logs = load(logdir)
    assert logs.runs() == ["new", "old"]
    for step in STEPS:
        np.testing.assert_array_equal(logs.kernels("new", "0", step), logs.kernels("old", "0", step))
        np.testing.assert_array_equal(logs.activations("new", "2", step), logs.activations("old", "2", step))
        a, b = logs.filter_table("new", "2", step), logs.filter_table("old", "2", step)
        assert a.keys() == b.keys()
        for name in a:
            np.testing.assert_array_equal(a[name], b[name], err_msg=name)


def _answers(get, runs: tuple[str, ...] = ("new", "old")) -> list:
    """The routes' answers for `runs` (four each), with the run's name taken out."""
    out = []
    for run in runs:
        for route in ("layer?layer=0&step=1", "filter?layer=2&step=2&filter=3", "table?layer=2&step=2", "cka_epochs?layer=2"):
            answer = get(f"{route}&run={run}")
            answer.pop("run", None)
            out.append(answer)
    return out


def test_every_route_answers_both_layouts_alike(logdir):
    logs = load(logdir)
    client = Client(TensorBoardWSGI([ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=str(logdir)))]))

    def get(route: str) -> dict:
        r = client.get(f"{BASE}/{route}")
        assert r.status_code == 200, r.get_data(as_text=True)
        return r.get_json()

    answers = _answers(get)
    assert answers[:4] == answers[4:]
    assert not get("index?x=1")["problems"]


def _loaded(base: str, runs: int) -> dict:
    """/index once `runs` runs' two layers show every step (TensorBoard loads event files lazily)."""
    seen: dict = {}

    def every_step() -> bool:
        seen.update(get_json(f"{base}{BASE}/index"))
        return [len(layer["steps"]) for run in seen["runs"] for layer in run["layers"]] == [len(STEPS)] * 2 * runs

    assert wait_for(every_step), seen["problems"]
    return seen


@pytest.mark.parametrize("load_fast", ["true", "false"])
def test_a_real_tensorboard_serves_both_layouts_alike_under_each_loader(logdir, load_fast):
    with tensorboard(logdir, args=[f"--load_fast={load_fast}"]) as base:
        _loaded(base, runs=2)
        answers = _answers(lambda route: get_json(f"{base}{BASE}/{route}"))
    assert answers[:4] == answers[4:]


def test_a_damaged_sidecar_costs_only_the_records_it_cut(tmp_path):
    _log(tmp_path / "run")
    (path,) = [p for p in (tmp_path / "run").iterdir() if p.name.endswith(sidecar.SIDECAR_SUFFIX)]
    logs = load(tmp_path)
    streams = [(layer, kind) for layer in [*logs.layers("run"), fmt.RUN_LAYER] for kind in logs.kinds("run", layer)]
    whole = sum(len(logs.bundles("run", layer, kind)) for layer, kind in streams)
    with open(path, "r+b") as f:  # the last record written, step 2's, loses its tail
        f.truncate(path.stat().st_size - 100)
    logs = load(tmp_path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        read = sum(len(logs.bundles("run", layer, kind)) for layer, kind in streams)
        assert logs.kernels("run", "0", 0).shape == (32, 3, 3, 3)
    skipped = [str(w.message) for w in caught if "truncated sidecar" in str(w.message)]
    assert len(skipped) == 1 and "at step 2" in skipped[0], [str(w.message) for w in caught]
    assert read == whole - 1


def test_a_full_disk_while_writing_the_sidecar_rolls_back_both_files(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3))
    viz = ConvViz(tmp_path / "run", probe=PROBE[0], perturbations=False, background=False)
    assert viz.log(model, 0)
    writer = viz._writer
    sizes = (os.path.getsize(writer.path), writer._sidecar_size)
    monkeypatch.setattr(os, "write", writes_cut_short(lambda: writer._sidecar_fd))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not viz.log(model, 1)
        sidecar_path = tmp_path / "run" / writer._sidecar_name
        assert (os.path.getsize(writer.path), os.path.getsize(sidecar_path)) == sizes  # back to the last whole step
        monkeypatch.undo()
        assert viz.log(model, 2)
        viz.close()
    assert [str(w.message) for w in caught if "No space" in str(w.message)]
    logs = load(tmp_path)
    assert logs.steps("run", "0") == [0, 2]
    assert logs.activations("run", "0", 2).shape[:2] == (4, 32)


@pytest.mark.parametrize("payload, why", [
    (sidecar.REFERENCE_MAGIC + b"\0" * 20 + b"../../etc/passwd.records", "not a sidecar file of its run folder"),
    (sidecar.REFERENCE_MAGIC + b"\0" * 20 + b"events.out.tfevents.1", "not a sidecar file of its run folder"),
    (sidecar.REFERENCE_MAGIC + b"\0" * 5, "truncated"),
])
def test_a_reference_names_only_a_sidecar_file_of_its_run_folder(payload, why):
    with pytest.raises(ValueError, match=why):
        sidecar.parse_reference(payload)
    assert sidecar.parse_reference(b"CVZ1 a bundle") is None


@pytest.fixture(scope="module")
def second_logdir(tmp_path_factory) -> Path:
    """Another logdir, as a second team member's: the same run as "new", written now."""
    root = tmp_path_factory.mktemp("sidecar_b") / "logs"
    _log(root / "run")
    return root


# Under --logdir_spec TensorBoard's default (--load_fast=auto) falls back to its Python loader, and
# --load_fast=true exits ("Could not start data server: empty --logdir"): its data server takes a
# --logdir only. The --logdir answers compared with are each loader's own.
@pytest.mark.parametrize("load_fast", ["auto", "false"])
def test_a_real_tensorboard_under_logdir_spec_serves_each_folders_records(logdir, second_logdir, load_fast):
    with tensorboard(logdir, args=[f"--load_fast={load_fast}"]) as base:
        _loaded(base, runs=2)
        alone = _answers(lambda route: get_json(f"{base}{BASE}/{route}"))
    with tensorboard({"a": logdir, "b": second_logdir}, args=[f"--load_fast={load_fast}"]) as base:
        index = _loaded(base, runs=3)
        assert [run["run"] for run in index["runs"]] == ["a/new", "a/old", "b/run"]
        assert not index["problems"]
        answers = _answers(lambda route: get_json(f"{base}{BASE}/{route}"), ("a/new", "a/old", "b/run"))
    assert answers == alone + alone[:4]  # b/run is "new" logged again, alike to the byte
