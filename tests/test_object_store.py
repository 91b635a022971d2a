"""Logdirs in an object store: ConvViz, `load()`, a real TensorBoard, log-checkpoints and
export-projector on `s3://` and `gs://` URLs, each against a real server of its protocol on
loopback that the tests start (moto for S3, gcp-storage-emulator for GCS): every test runs once
per store."""
from __future__ import annotations

import importlib.util
import re
import time
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from objectstores import GCSServer, LoopbackStore, S3Server, serving
from tbserver import get_json, tensorboard, wait_for
from tb_convviz import ConvViz, load, storage
from tb_convviz.schema import format as fmt
from tb_convviz.cli.command import main
from tb_convviz.cli.posthoc import log_checkpoints
from tb_convviz.cli.projector import export_projector

IMAGES = torch.randn(4, 1, 10, 10, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 0, 1])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))


def _train_and_log(viz: ConvViz, model: nn.Module, epochs: range) -> list[dict]:
    """A few SGD steps per epoch, logged at each epoch's end; the weights after each epoch."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    states = []
    for epoch in epochs:
        loss = nn.functional.cross_entropy(model(IMAGES), LABELS)
        opt.zero_grad()
        loss.backward()
        opt.step()
        viz.log(model, epoch)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return states


# How long one step's failed write may hold the writer when its store stops answering: s3fs is
# given 3 s to connect and 2 attempts (tb_convviz/storage.py); gcsfs retries a refused connection
# 6 times with backoff (1 + 2 + 4 + 8 + 16 s, each plus up to 1 s) and has no setting for it.
FAILED_WRITE_S = {"s3": 20, "gs": 40}


def _new_store(scheme: str, tmp_path_factory) -> LoopbackStore:
    if scheme == "s3":
        pytest.importorskip("s3fs", reason="the [s3] extra (in the test extra) brings s3fs")
        pytest.importorskip("moto.server", reason="the test extra brings moto[server]")
        return S3Server()
    # Looked up, not imported: gcsfs picks its default class when imported, which must come after
    # serving() has set GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT, as it does for a user who sets it first.
    if importlib.util.find_spec("gcsfs") is None:
        pytest.skip("the [gcs] extra (in the test extra) brings gcsfs")
    pytest.importorskip("gcp_storage_emulator.server", reason="the test extra brings gcp-storage-emulator")
    return GCSServer(str(tmp_path_factory.mktemp("gcs-emulator")))


def _assert_kernels_are(logs, run: str, step: int, weight: torch.Tensor) -> None:
    """Layer 0's logged kernels at `step` are `weight`, to the 8-bit code's half step per filter."""
    weight = weight.numpy()
    tolerance = (weight.max(axis=(1, 2, 3)) - weight.min(axis=(1, 2, 3))) / 510 + 1e-6
    error = np.abs(logs.kernels(run, "0", step) - weight).max(axis=(1, 2, 3))
    assert (error <= tolerance).all(), (step, error, tolerance)


@pytest.fixture(scope="module", params=["s3", "gs"])
def store(request, tmp_path_factory):
    with serving(_new_store(request.param, tmp_path_factory)) as server:
        yield server


@pytest.fixture(scope="module")
def logged(store, tmp_path_factory):
    """One run logged into a bucket and the same run into a local folder."""
    bucket = store.make_bucket("convviz-logs")
    local = tmp_path_factory.mktemp("local")
    for where in (f"{bucket}/exp/run", local / "run"):
        with ConvViz(where, probe=(IMAGES, LABELS), impact=True) as viz:
            _train_and_log(viz, _model(), range(3))
    return f"{bucket}/exp", local


def test_convviz_writes_to_a_bucket_and_load_reads_what_a_local_folder_holds(logged):
    url, local = logged
    remote_logs, local_logs = load(url), load(str(local))
    assert remote_logs.runs() == local_logs.runs() == ["run"]
    assert remote_logs.layers("run") == local_logs.layers("run") == ["0", "2"]
    for layer in ("0", "2"):
        assert remote_logs.steps("run", layer) == local_logs.steps("run", layer) == [0, 1, 2]
        for step in (0, 1, 2):
            np.testing.assert_array_equal(remote_logs.kernels("run", layer, step), local_logs.kernels("run", layer, step))
            a, b = remote_logs.filter_stats("run", layer, step), local_logs.filter_stats("run", layer, step)
            assert a.keys() == b.keys()
            for name in a:
                np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    np.testing.assert_array_equal(remote_logs.impact("run", "2", 2)["d_loss"], local_logs.impact("run", "2", 2)["d_loss"])
    assert remote_logs.impact("run", "2", 2)["d_loss"].shape == (4,)


def test_a_second_load_sees_the_steps_written_since_the_first(store):
    """A notebook following a live run, or log-checkpoints resuming: one process loads a bucket's
    logdir again and must see what was written since (TensorBoard's gfile lists it)."""
    url = store.make_bucket("live") + "/exp"
    with ConvViz(url + "/run", probe=(IMAGES, LABELS)) as viz:
        model = _model()
        _train_and_log(viz, model, range(1))
        viz.flush()
        assert load(url).steps("run", "0") == [0]
        _train_and_log(viz, model, range(1, 3))
    assert load(url).steps("run", "0") == [0, 1, 2]


def test_a_real_tensorboard_serves_the_tab_from_the_bucket(logged, tmp_path):
    url, _ = logged
    # The Python loader (--load_fast=false) reads either store through the environment's endpoint:
    # TensorBoard's Rust loader reads no s3:// logdir, and its GCS client has Google's endpoints
    # built in (it cannot be pointed at an emulator).
    with tensorboard(url, log_dir=tmp_path, args=["--reload_interval=1", "--load_fast=false"]) as base:
        api = base + "/data/plugin/convviz"
        # TensorBoard reads a run's event files one after the other: wait for the last step's.
        index = wait_for(lambda: (i := get_json(api + "/index")) and i["runs"]
                         and all(layer["steps"][-1:] == [2] for layer in i["runs"][0]["layers"]) and i)
        (run,) = index["runs"]
        assert run["run"] == "run"
        assert {layer["name"]: layer["steps"] for layer in run["layers"]} == {"0": [0, 1, 2], "2": [0, 1, 2]}
        layer = get_json(api + "/layer?run=run&layer=2&step=1")
        assert layer["step"] == 1 and layer["info"]["filters"] == 4
        table = get_json(api + "/table?run=run&layer=2&step=2")
        assert table["filters"] == 4 and table["columns"]
        impact = get_json(api + "/impact?run=run&layer=2&step=2")
        assert impact["record_step"] == 2 and impact["arrays"]


def test_the_bucket_stopping_mid_run_is_one_warning_and_training_goes_on(store):
    url = store.make_bucket("stops") + "/exp/run"
    model = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viz = ConvViz(url, probe=(IMAGES, LABELS))
        before = _train_and_log(viz, model, range(2))
        viz.flush()
        store.stop()
        try:
            started = time.monotonic()
            during = _train_and_log(viz, model, range(2, 4))  # two failed writes, one warning
            viz.flush()
            spent = time.monotonic() - started
        finally:
            store.start()
        after = _train_and_log(viz, model, range(4, 6))  # the bucket answers again: logging resumes
        viz.close()
    failures = [str(w.message) for w in caught if "writing failed" in str(w.message)]
    assert len(failures) == 1, [str(w.message) for w in caught]
    assert url.rsplit("/", 1)[0] in failures[0] and "training goes on" in failures[0]
    assert len(before) + len(during) + len(after) == 6  # every epoch trained
    assert not torch.equal(during[-1]["2.weight"], before[-1]["2.weight"])
    limit = 2 * FAILED_WRITE_S[store.scheme]
    assert spent < limit, f"2 steps against a stopped bucket held training {spent:.0f} s (> {limit} s)"
    logs = load(url.rsplit("/", 1)[0])
    assert logs.steps("run", "0") == [0, 1, 4, 5]
    for step, state in ((0, before[0]), (1, before[1]), (5, after[1])):
        _assert_kernels_are(logs, "run", step, state["0.weight"])


def test_log_checkpoints_reads_checkpoints_from_and_writes_logs_to_the_bucket(store, tmp_path, monkeypatch):
    bucket = store.make_bucket("posthoc")
    (tmp_path / "nets.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.ReLU(), nn.Conv2d(3, 4, 3), nn.ReLU(),\n"
        "                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    from nets import build

    model = _model()
    states = []
    for epoch in range(3):
        with torch.no_grad():
            model[0].weight.add_(0.1 * epoch)
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        local = tmp_path / f"epoch_{epoch:02d}.pt"
        torch.save({"model": states[-1], "epoch": epoch}, local)
        storage.put(f"{bucket}/ckpts/epoch_{epoch:02d}.pt", local.read_bytes())
        local.unlink()
    torch.save((IMAGES, LABELS), tmp_path / "probe.pt")
    storage.put(f"{bucket}/probe.pt", (tmp_path / "probe.pt").read_bytes())

    status = main(["log-checkpoints", "--model", "nets:build", "--checkpoints", f"{bucket}/ckpts/epoch_0[01].pt",
                   "--probe", f"{bucket}/probe.pt", "--logdir", f"{bucket}/posthoc", "--quiet"])
    assert status == 0
    assert load(f"{bucket}/posthoc").steps(".", "0") == [0, 1]
    # A rerun with a new checkpoint resumes from the logs in the bucket: only step 2 is new.
    report = log_checkpoints(build, f"{bucket}/ckpts/*.pt", f"{bucket}/probe.pt", f"{bucket}/posthoc", progress=False)
    assert [c.step for c in report.already] == [0, 1] and [c.step for c in report.logged] == [2]
    logs = load(f"{bucket}/posthoc")
    assert logs.steps(".", "0") == [0, 1, 2]
    step2 = logs.bundle(".", "0", fmt.KIND_FILTERS, 2)
    assert (step2.meta["prev_step"], step2.meta["first_step"]) == (1, 0)  # drift continued from the bucket's run
    for epoch, state in enumerate(states):
        _assert_kernels_are(logs, ".", epoch, state["0.weight"])


def test_export_projector_writes_into_the_bucket(logged):
    url, _ = logged
    config, step = export_projector(url, "run", "2", 2)
    folder = storage.join(url, "run", "plugins", "org_tensorflow_tensorboard_projector")
    assert step == 2 and config == storage.join(folder, "projector_config.pbtxt")
    text = storage.read_bytes(config).decode()
    (tensor_path,) = re.findall(r'tensor_path: "([^"]+)"', text)
    rows = storage.read_bytes(storage.join(folder, tensor_path)).decode().splitlines()
    assert len(rows) == 4 and all(len(r.split("\t")) == 3 * 3 * 3 for r in rows)  # 4 filters of 3×3×3
    with pytest.raises(ValueError, match="outside the logdir"):
        export_projector(url, "run", "2", 2, out_dir="../elsewhere")


def test_a_real_tensorboard_follows_a_live_run_in_the_bucket(store, tmp_path):
    """A team watches a run train into the bucket: every step, each its own object, shows up in
    the running TensorBoard (its file layer must not keep the run folder's first listing)."""
    url = store.make_bucket("followed") + "/exp"
    model = _model()
    with ConvViz(url + "/run", probe=(IMAGES, LABELS), perturbations=False) as viz:
        _train_and_log(viz, model, range(1))
        viz.flush()
        with tensorboard(url, log_dir=tmp_path, args=["--reload_interval=1", "--load_fast=false"]) as base:
            api = base + "/data/plugin/convviz/index"

            def steps() -> list:
                runs = get_json(api)["runs"]
                return runs[0]["layers"][0]["steps"] if runs and runs[0]["layers"] else []

            assert wait_for(lambda: steps() == [0], timeout=60), steps()
            _train_and_log(viz, model, range(1, 3))
            viz.flush()
            assert wait_for(lambda: steps() == [0, 1, 2], timeout=60), steps()
