"""The Hugging Face adapter: a real `transformers.Trainer` trains a tiny ResNet built from its
config (no download) for 2 epochs; the CONVVIZ records land in the Trainer's own TensorBoard run,
in the event file beside its scalars, and training is bit-identical to the same run without it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_models import EPOCHS, SIZE, Images, train
from tb_convviz import ConvViz, load
from training import one_thread

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'tb_convviz[hf]')")
pytest.importorskip("accelerate", reason="the Trainer needs accelerate (pip install 'tb_convviz[hf]')")


def test_core_import_does_not_pull_transformers():
    code = "import sys, tb_convviz; assert not any(m.startswith('transformers') for m in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_options_are_checked_at_construction_naming_the_argument():
    from tb_convviz.hf import ConvVizCallback

    with pytest.raises(ValueError, match="every_n_epochs"):
        ConvVizCallback(every_n_epochs=0)
    with pytest.raises(ValueError, match="map_sise"):
        ConvVizCallback(map_sise=8)
    with pytest.raises(ValueError, match="log_dir_or_summary_writer"):
        ConvVizCallback(log_dir_or_summary_writer="runs")
    with pytest.raises(ValueError, match="impact=True needs probe labels"):
        ConvVizCallback(probe=torch.randn(2, 1, SIZE, SIZE), impact=True)


def test_a_convviz_without_a_folder_says_so_at_log(tmp_path):
    viz = ConvViz(None, probe=torch.randn(2, 1, 5, 5))
    with pytest.raises(RuntimeError, match="write_to"):
        viz.log(torch.nn.Conv2d(1, 2, 3), 0)
    viz.write_to(tmp_path)
    with pytest.raises(RuntimeError, match="once"):
        viz.write_to(tmp_path)
    viz.close()


def test_trainer_logs_every_epoch_into_its_run_beside_the_scalars_and_trains_the_same(tmp_path):
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard import context

    from tb_convviz.hf import ConvVizCallback

    data = Images()
    callback = ConvVizCallback(probe=(data.x, data.y), impact=True)
    with one_thread():
        plain = train(tmp_path / "plain", None)
        # A Hugging Face model branches on its arguments in Python: exact ablation replays it with hooks.
        with pytest.warns(RuntimeWarning, match="torch.fx cannot trace the model"):
            logged = train(tmp_path / "logged", callback)
    assert plain.keys() == logged.keys()
    assert all(torch.equal(plain[k], logged[k]) for k in plain), [k for k in plain if not torch.equal(plain[k], logged[k])]
    assert callback.viz is None  # closed at the end of train()

    runs_dir = tmp_path / "logged" / "runs"
    (run_dir,) = runs_dir.iterdir()  # the Trainer's run folder: runs/<date>_<host>
    assert len([p for p in run_dir.iterdir() if "tfevents" in p.name]) == 1  # one event file: the Trainer's own writer's, shared

    # The Trainer's scalars, through TensorBoard's data provider (the Python loader: it follows one
    # event file per folder, so both must be in that one).
    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(runs_dir))
    mux.Reload()
    scalars = data_provider.MultiplexerDataProvider(mux, str(runs_dir)).read_scalars(
        context.RequestContext(), experiment_id="", plugin_name="scalars", downsample=100
    )
    assert list(scalars) == [run_dir.name]
    assert len(scalars[run_dir.name]["train/loss"]) == EPOCHS

    logs = load(runs_dir)
    assert logs.runs() == [run_dir.name]
    run = run_dir.name
    layers = logs.layers(run)
    assert layers[0] == "resnet.embedder.embedder.convolution" and len(layers) == 6
    for layer in layers:
        assert logs.steps(run, layer) == list(range(EPOCHS))
        assert EPOCHS - 1 in logs.steps(run, layer, "kernels")  # the last epoch is final: full kernels
    # The analyses that read class scores take the ResNet's ModelOutput.logits.
    last = layers[-1]
    assert logs.impact(run, last, EPOCHS - 1)["d_accuracy"].shape == (8,)
    assert logs.tuning(run, last, EPOCHS - 1, "adversarial")["fgsm"].shape[0] == 8


def test_without_tensorboard_reporting_records_go_where_the_trainers_writer_would(tmp_path, monkeypatch):
    from tb_convviz.hf import ConvVizCallback

    data = Images()
    with one_thread():
        train(tmp_path / "default", ConvVizCallback(probe=data.x[:4], perturbations=False), report_to=())
        monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "named" / "run1"))
        train(tmp_path / "out", ConvVizCallback(probe=data.x[:4], perturbations=False), report_to=())
    (run_dir,) = (tmp_path / "default" / "runs").iterdir()  # runs/<date>_<host>, as TensorBoardCallback names it
    for logdir, run in ((tmp_path / "default" / "runs", run_dir.name), (tmp_path / "named", "run1")):
        logs = load(logdir)
        assert logs.runs() == [run]
        assert logs.steps(run, "resnet.embedder.embedder.convolution") == list(range(EPOCHS))
    assert not (tmp_path / "out" / "runs").exists()


def test_a_later_train_with_the_same_callback_logs_a_run_of_its_own(tmp_path):
    from tb_convviz.hf import ConvVizCallback

    callback = ConvVizCallback(probe=Images().x[:4], perturbations=False)
    with one_thread():
        for out in ("first", "second"):
            train(tmp_path / out, callback)
    for out in ("first", "second"):
        logs = load(tmp_path / out / "runs")
        (run,) = logs.runs()
        assert logs.steps(run, "resnet.embedder.embedder.convolution") == list(range(EPOCHS))


def test_under_torchrun_every_rank_takes_part_and_the_first_alone_writes(tmp_path):
    """Two gloo ranks: ConvViz's first log makes a process group of every rank, so a rank that did
    not take part would hang the other; the run folder holds one event file, with every epoch."""
    from tbserver import free_port

    out = tmp_path / "out"
    job = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(Path(__file__).parent / "hf_ddp_job.py"), str(out)]
    subprocess.run(job, check=True, timeout=300, capture_output=True)
    events = [p for p in out.rglob("*") if p.is_file() and "tfevents" in p.name]
    assert len(events) == 1 and events[0].parent.parent == out / "runs"  # rank 0's Trainer writer's file, nothing from rank 1
    files = [p for p in out.rglob("*") if p.is_file() and p not in events]
    assert [p.parent for p in files] == [events[0].parent] and files[0].name.endswith(".records")  # rank 0's sidecar alone
    logs = load(out / "runs")
    (run,) = logs.runs()
    for layer in logs.layers(run):
        assert logs.steps(run, layer) == list(range(EPOCHS))
        assert logs.steps(run, layer, "impact") == list(range(EPOCHS))  # the ranks' shares of the ablation, gathered
