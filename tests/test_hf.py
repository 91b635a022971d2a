"""The Hugging Face adapter: a real `transformers.Trainer` trains a tiny ResNet built from its
config (no download) for 2 epochs; the CONVVIZ records land in the Trainer's own TensorBoard run,
in the event file beside its scalars, and training is bit-identical to the same run without it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest
import torch

from tb_convviz import ConvViz, load
from training import one_thread

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'tb_convviz[hf]')")
pytest.importorskip("accelerate", reason="the Trainer needs accelerate (pip install 'tb_convviz[hf]')")

EPOCHS = 2
IMAGES, SIZE = 32, 12


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


class _Images(torch.utils.data.Dataset):
    """Grey SIZE×SIZE images labelled by whether their mean is positive: the keys the Trainer feeds a ResNet."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(IMAGES, 1, SIZE, SIZE, generator=g)
        self.y = (self.x.mean(dim=(1, 2, 3)) > 0).long()

    def __len__(self) -> int:
        return IMAGES

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def _train(output_dir: Path, callback: Optional[Any]) -> dict[str, torch.Tensor]:
    """Train a randomly initialised tiny ResNet for EPOCHS epochs, scalars to TensorBoard; its final weights."""
    from transformers import ResNetConfig, ResNetForImageClassification, Trainer, TrainingArguments

    config = ResNetConfig(num_channels=1, embedding_size=4, hidden_sizes=[4, 8], depths=[1, 1], layer_type="basic", num_labels=2)
    torch.manual_seed(0)
    model = ResNetForImageClassification(config)
    args = TrainingArguments(
        output_dir=str(output_dir), num_train_epochs=EPOCHS, per_device_train_batch_size=8, learning_rate=0.05,
        report_to=["tensorboard"], logging_strategy="epoch", save_strategy="no", use_cpu=True, seed=0,
        disable_tqdm=True, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=args, train_dataset=_Images(), callbacks=[callback] if callback else None)
    trainer.train()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_trainer_logs_every_epoch_into_its_run_beside_the_scalars_and_trains_the_same(tmp_path):
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard import context

    from tb_convviz.hf import ConvVizCallback

    data = _Images()
    callback = ConvVizCallback(probe=(data.x, data.y), impact=True)
    with one_thread():
        plain = _train(tmp_path / "plain", None)
        # A Hugging Face model branches on its arguments in Python: exact ablation replays it with hooks.
        with pytest.warns(RuntimeWarning, match="torch.fx cannot trace the model"):
            logged = _train(tmp_path / "logged", callback)
    assert plain.keys() == logged.keys()
    assert all(torch.equal(plain[k], logged[k]) for k in plain), [k for k in plain if not torch.equal(plain[k], logged[k])]
    assert callback.viz is None  # closed at the end of train()

    runs_dir = tmp_path / "logged" / "runs"
    (run_dir,) = runs_dir.iterdir()  # the Trainer's run folder: runs/<date>_<host>
    assert len(list(run_dir.iterdir())) == 1  # one event file: the Trainer's own writer's, shared

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
