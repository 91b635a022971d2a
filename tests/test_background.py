"""The background worker: same records as inline, nothing lost, nothing blocking for good."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models import bn_cnn, probe_images
from tb_convviz import ConvViz, load
from tb_convviz.schema import format as fmt
from tb_convviz.write.writer import RecordWriter
from tb_convviz.schema import records

PROBE = (probe_images(n=6, size=8), torch.tensor([0, 1, 2, 0, 1, 2]))


def _log_three_epochs(logdir: Path, background: bool, **options) -> None:
    model = bn_cnn()
    viz = ConvViz(logdir, probe=PROBE, impact=True, counterfactuals={"dim": lambda b: 0.5 * b},
                  background=background, **options)
    for epoch in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(1.05).add_(0.01)
        viz.log(model, epoch)
    viz.close()


def test_background_and_inline_write_the_same_records(tmp_path):
    _log_three_epochs(tmp_path / "inline", background=False)
    _log_three_epochs(tmp_path / "background", background=True)
    logs = load(tmp_path)
    assert logs.runs() == ["background", "inline"]
    for layer in logs.layers("inline"):
        for kind in (fmt.KIND_FILTERS, fmt.KIND_MAPS, fmt.KIND_KERNELS, fmt.KIND_PERTURBATION, fmt.KIND_IMPACT):
            assert logs.steps("inline", layer, kind) == logs.steps("background", layer, kind) == [0, 1, 2]
            for step in range(3):
                a = logs.bundle("inline", layer, kind, step)
                b = logs.bundle("background", layer, kind, step)
                assert a.names() == b.names() and a.meta == b.meta
                for name in a.names():
                    np.testing.assert_allclose(a.array(name), b.array(name), rtol=1e-5, atol=1e-6, err_msg=f"{layer}/{kind}/{name}")


def test_close_and_flush_leave_every_logged_step_readable(tmp_path):
    model = bn_cnn()
    viz = ConvViz(tmp_path, probe=PROBE)
    for epoch in range(5):
        assert viz.log(model, epoch)
    viz.flush()
    assert load(tmp_path).steps(load(tmp_path).runs()[0], "0") == [0, 1, 2, 3, 4]
    viz.log(model, 5)
    viz.close()
    assert load(tmp_path).steps(load(tmp_path).runs()[0], "0") == [0, 1, 2, 3, 4, 5]


def test_steps_pending_at_exit_are_written_without_close(tmp_path):
    """A user who forgets close(): the atexit hook drains the worker before the process ends."""
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from models import bn_cnn, probe_images
        from tb_convviz import ConvViz
        viz = ConvViz({str(tmp_path)!r}, probe=(probe_images(n=6, size=8), torch.tensor([0, 1, 2, 0, 1, 2])), impact=True)
        model = bn_cnn()
        for epoch in range(4):
            viz.log(model, epoch)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    logs = load(tmp_path)
    run = logs.runs()[0]
    assert logs.steps(run, "0", fmt.KIND_IMPACT) == [0, 1, 2, 3]


def test_log_waits_for_a_slot_warns_once_and_loses_no_epoch(tmp_path):
    gate = threading.Event()

    def held(batch: torch.Tensor) -> torch.Tensor:  # a counterfactual the worker runs: holds it until the gate opens
        gate.wait(timeout=60)
        return batch

    model = bn_cnn()
    viz = ConvViz(tmp_path, probe=PROBE, perturbations=False, counterfactuals={"held": held})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert viz.log(model, 0)  # taken by the worker, which waits at the gate
        assert viz.log(model, 1)  # waits in the free slot
        threading.Timer(0.5, gate.set).start()
        assert viz.log(model, 2)  # both slots busy: returns only once the gate opens
        assert viz.log(model, 3)
        viz.close()
    slow = [w for w in caught if "slower than training" in str(w.message)]
    assert len(slow) == 1 and "every_n_epochs" in str(slow[0].message)
    assert load(tmp_path).steps(load(tmp_path).runs()[0], "0", fmt.KIND_PERTURBATION) == [0, 1, 2, 3]


def test_a_model_that_cannot_be_deep_copied_is_logged_inline(tmp_path):
    class Uncopyable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.lock = threading.Lock()  # deepcopy cannot copy a lock

        def forward(self, x):
            return self.conv(x).mean(dim=(2, 3))

    model = Uncopyable()
    viz = ConvViz(tmp_path, probe=probe_images(size=8))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert viz.log(model, 0)
    assert any("cannot be deep-copied" in str(w.message) and "inline" in str(w.message) for w in caught)
    assert viz._worker is None  # inline: written before log() returned
    assert load(tmp_path).steps(load(tmp_path).runs()[0], "conv") == [0]
    viz.close()


@pytest.mark.parametrize("background", [False, True])
def test_each_log_reads_the_model_object_it_is_given(tmp_path, background):
    """A checkpoint reloaded into a new object, or an EMA copy: its own weights are logged."""
    first, second = bn_cnn(), bn_cnn()
    with torch.no_grad():
        second[0].weight.mul_(-2.0)
    viz = ConvViz(tmp_path, probe=PROBE, perturbations=False, background=background)
    viz.log(first, 0)
    viz.log(second, 1)
    viz.close()
    logs = load(tmp_path)
    run = logs.runs()[0]
    np.testing.assert_allclose(logs.kernels(run, "0", 0), first[0].weight.detach().numpy(), atol=0.01)
    np.testing.assert_allclose(logs.kernels(run, "0", 1), second[0].weight.detach().numpy(), atol=0.02)
    a0, a1 = logs.activations(run, "0", 0), logs.activations(run, "0", 1)
    assert not np.allclose(a0, a1)  # activations follow the new weights too


def test_another_architecture_is_a_clear_error(tmp_path):
    viz = ConvViz(tmp_path, probe=PROBE, perturbations=False)
    viz.log(bn_cnn(), 0)
    wider = nn.Sequential(nn.Conv2d(3, 7, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 3))
    with pytest.raises(ValueError, match="not the architecture of the first log"):
        viz.log(wider, 1)
    viz.close()


def test_a_step_shows_only_once_all_its_records_are_written(tmp_path):
    writer = RecordWriter(tmp_path / "run")
    bundle = fmt.encode_bundle({}, {"info": {}})
    writer.write("conv", fmt.KIND_FILTERS, 0, bundle)
    writer.write(fmt.RUN_LAYER, fmt.KIND_COMMIT, 0, records.commit_record(1))
    writer.write("conv", fmt.KIND_FILTERS, 1, bundle)  # step 1's other records still being written
    writer.flush()
    assert load(tmp_path).steps("run", "conv") == [0]
    writer.write(fmt.RUN_LAYER, fmt.KIND_COMMIT, 1, records.commit_record(1))
    writer.close()
    assert load(tmp_path).steps("run", "conv") == [0, 1]


def test_analysis_device_cpu_runs_on_a_copy(tmp_path):
    model = bn_cnn()
    viz = ConvViz(tmp_path, probe=PROBE, perturbations=False, background=False, analysis_device="cpu")
    assert viz.log(model, 0)
    viz.close()
    assert viz._copy is not None and viz._copy.model is not model


def test_bad_analysis_device_fails_at_construction(tmp_path):
    with pytest.raises(ValueError, match="analysis_device"):
        ConvViz(tmp_path, analysis_device="warp-drive")


@pytest.mark.parametrize("background", [False, True])
def test_an_analysis_caveat_reaches_the_user_once(tmp_path, background):
    """The fx → hooks fallback of exact ablation, from the worker thread too, warned once."""

    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            h = self.conv(x)
            if h.sum() > 1e9:  # data-dependent control flow: torch.fx cannot trace it
                h = h * 0
            return self.head(h.mean(dim=(2, 3)))

    viz = ConvViz(tmp_path, probe=PROBE, impact=True, perturbations=False, background=background)
    model = Untraceable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for epoch in range(3):
            viz.log(model, epoch)
        viz.close()
    fallback = [w for w in caught if "torch.fx cannot trace" in str(w.message)]
    assert len(fallback) == 1 and "forward hooks" in str(fallback[0].message)
    assert load(tmp_path).steps(load(tmp_path).runs()[0], "conv", fmt.KIND_IMPACT) == [0, 1, 2]


class _Tempered(nn.Module):
    """A net whose forward reads a swappable activation and a plain float attribute."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.act = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1)
        self.head = nn.Linear(6, 3)
        self.temperature = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv1(x)) * self.temperature
        return self.head(self.act(self.conv2(h)).mean(dim=(2, 3)))


def _changing_run(logdir, background: bool) -> None:
    torch.manual_seed(0)
    model = _Tempered()
    viz = ConvViz(logdir, probe=PROBE, impact=True, background=background)
    viz.log(model, 0)
    model.act = nn.Tanh()  # the module tree changes
    viz.log(model, 1)
    model.conv2.dilation, model.conv2.padding = (2, 2), (2, 2)  # a conv's plain attributes change
    viz.log(model, 2)
    model.temperature = 0.25  # a plain attribute the forward reads
    viz.log(model, 3)
    viz.close()


def test_the_background_copy_follows_changes_of_modules_and_plain_attributes(tmp_path):
    _changing_run(tmp_path / "background", True)
    _changing_run(tmp_path / "inline", False)
    logs = load(tmp_path)
    for step in range(4):
        for layer in ("conv1", "conv2"):
            ours, theirs = logs.filter_stats("background", layer, step), logs.filter_stats("inline", layer, step)
            for name in ours:
                np.testing.assert_allclose(ours[name], theirs[name], rtol=1e-6, atol=1e-7, err_msg=f"{step} {layer} {name}")
            np.testing.assert_allclose(logs.activations("background", layer, step), logs.activations("inline", layer, step), atol=1e-6)
            for kind in ("perturbation", "impact"):
                a = getattr(logs, kind)("background", layer, step)
                b = getattr(logs, kind)("inline", layer, step)
                for name in a:
                    np.testing.assert_allclose(np.asarray(a[name], np.float64), np.asarray(b[name], np.float64), rtol=1e-5, atol=1e-6, err_msg=f"{step} {layer} {kind} {name}")
    # each change moved what the layers see: the comparison above is not between equal steps
    act = [logs.filter_stats("inline", "conv2", s)["act_mean"] for s in range(4)]
    assert all(not np.allclose(act[s], act[s + 1]) for s in range(3))


def test_instances_in_one_process_trace_without_disturbing_each_others_analyses(tmp_path):
    """Every log of every instance traces a model (a plain attribute changes each step) while the
    other instances' workers run their probe passes: none of them fails, every step lands."""
    runs = 6
    models = []
    for seed in range(runs):
        torch.manual_seed(seed)
        models.append(_Tempered())
    vizs = [ConvViz(tmp_path / f"run{i}", probe=PROBE, impact=True) for i in range(runs)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            for model, viz in zip(models, vizs):
                model.temperature = 1.0 + step
                viz.log(model, step)
        for viz in vizs:
            viz.close()
    failures = [str(w.message) for w in caught if "failed" in str(w.message) or "worker hit" in str(w.message)]
    assert failures == []
    logs = load(tmp_path)
    for i in range(runs):
        for kind in ("filters", "impact", "perturbation"):
            assert logs.steps(f"run{i}", "conv2", kind) == [0, 1, 2], (i, kind)


def test_logs_from_before_stamps_read_as_they_did(tmp_path):
    """Records without the commit rule's stamps: committed steps show (every step, with no commit
    record at all), whatever their wall times."""
    import json

    from tensorboard.compat.proto import event_pb2

    from tb_convviz.write.writer import record_summary, tfrecord

    def event_file(run: str, records_: list[tuple[str, str, int]]) -> None:
        folder = tmp_path / run
        folder.mkdir()
        with open(folder / "events.out.tfevents.1.old", "wb") as f:
            f.write(tfrecord(event_pb2.Event(wall_time=1.0, file_version="brain.Event:2").SerializeToString()))
            for i, (layer, kind, step) in enumerate(records_):
                summary = record_summary(layer, kind, fmt.encode_bundle({}, {"info": {}}))
                summary.value[0].metadata.plugin_data.content = json.dumps({"version": 1, "kind": kind}).encode()
                f.write(tfrecord(event_pb2.Event(wall_time=10.0 + i, step=step, summary=summary).SerializeToString()))

    event_file("committed", [("conv", "filters", 0), ("_run", "commit", 0), ("conv", "filters", 1)])
    event_file("no_commits", [("conv", "filters", 0), ("conv", "filters", 1)])
    logs = load(tmp_path)
    assert logs.steps("committed", "conv") == [0]
    assert logs.steps("no_commits", "conv") == [0, 1]
