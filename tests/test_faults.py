"""Bad input fails early and names the problem; failures during training warn once and go on."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from diskfull import writes_cut_short
from tb_convviz import ConvViz, load
from tb_convviz.write import collect as collect_module


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"every_n_epochs": 0}, "every_n_epochs"),
        ({"every_n_epochs": 1.5}, "every_n_epochs"),
        ({"kernels_every": -1}, "kernels_every"),
        ({"map_size": 0}, "map_size"),
        ({"map_images": "4"}, "map_images"),
        ({"keep_all": "yes"}, "keep_all"),
        ({"perturbations": "all"}, "perturbations"),
        ({"perturbations": {"rotate": True}}, "unknown options"),
        ({"impact": 1}, "impact"),
        ({"counterfactuals": {"a/b": abs}}, "counterfactuals"),
        ({"map_budget_mb": 0}, "map_budget_mb"),
        ({"layers": 3}, "layers"),
        ({"probe": torch.randn(3, 3)}, "probe"),
        ({"probe": torch.zeros(2, 3, 4, 4, dtype=torch.long)}, "probe"),
        ({"probe": torch.full((1, 3, 4, 4), float("nan"))}, "probe"),
        ({"probe": (torch.randn(2, 3, 4, 4), torch.tensor([0, 1, 2]))}, "labels"),
        ({"probe": (torch.randn(2, 3, 4, 4), torch.tensor([0.5, 1.0]))}, "labels"),
        ({"probe": [1, 2, 3]}, "probe"),
    ],
)
def test_bad_arguments_fail_at_construction_naming_the_argument(tmp_path, kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        ConvViz(tmp_path, **kwargs)


def test_unwritable_log_dir_fails_at_construction(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ValueError, match="log_dir"):
        ConvViz(blocker / "logs")


def test_unknown_layer_name_fails_at_first_log_listing_the_real_ones(tmp_path):
    viz = ConvViz(tmp_path, layers=["0", "conv9"])
    with pytest.raises(ValueError, match=r"conv9.*conv layers are \['0', '2'\]"):
        viz.log(_net(), 0)


def test_non_conv_layer_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not conv layers"):
        ConvViz(tmp_path, layers=["1"]).log(_net(), 0)


def test_model_without_conv_fails_at_first_log(tmp_path):
    with pytest.raises(ValueError, match="no conv layer"):
        ConvViz(tmp_path).log(nn.Sequential(nn.Linear(3, 2)), 0)


def test_probe_that_does_not_fit_the_model_fails_at_first_log(tmp_path):
    viz = ConvViz(tmp_path, probe=torch.randn(2, 5, 8, 8))  # 5 channels into a 3-channel conv
    with pytest.raises(ValueError, match=r"probe of shape \(2, 5, 8, 8\) does not fit the model"):
        viz.log(_net(), 0)


def _train_with(viz: ConvViz, model: nn.Module, epochs: range) -> list[bool]:
    """Log each epoch; the steps' outcomes are known once the worker is flushed."""
    results = []
    for epoch in epochs:
        with torch.no_grad():
            model[0].weight.add_(0.01)
        results.append(viz.log(model, epoch))
    viz.flush()
    return results


@pytest.mark.parametrize("background", [False, True])
def test_disk_full_warns_once_and_keeps_earlier_steps(tmp_path, monkeypatch, background):
    model = _net()
    viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 3, 8, 8), background=background)
    assert _train_with(viz, model, range(3)) == [True] * 3

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(viz._writer, "write", full_disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert _train_with(viz, model, range(3, 6)) == [background] * 3  # inline: not written; background: taken, then failed
    messages = [str(w.message) for w in caught if "No space left" in str(w.message)]
    assert len(messages) == 1  # one clear warning, not one per epoch
    monkeypatch.undo()
    assert viz.log(model, 6)  # the disk frees up: logging resumes
    viz.close()
    assert load(tmp_path).steps("run", "0") == [0, 1, 2, 6]


@pytest.mark.parametrize("background", [False, True])
def test_analysis_exception_warns_once_and_training_goes_on(tmp_path, monkeypatch, background):
    def broken(acts):
        raise ArithmeticError("analysis bug")

    monkeypatch.setattr(collect_module, "activation_stats", broken)
    model = _net()
    viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 3, 8, 8), perturbations=False, background=background)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = _train_with(viz, model, range(3))
    assert results == [background] * 3  # inline: nothing written; background: taken, then failed
    relevant = [w for w in caught if "analysis bug" in str(w.message)]
    others = [w for w in caught if "analysis bug" not in str(w.message) and "slower than training" not in str(w.message)]
    assert len(relevant) == 1 and not others
    monkeypatch.undo()
    assert viz.log(model, 3)  # the next step still lands
    viz.close()
    assert load(tmp_path).steps("run", "0") == [3]


def test_nan_weights_warn_once_and_are_still_logged(tmp_path):
    model = _net()
    viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 3, 8, 8))
    with torch.no_grad():
        model[2].weight[1] = float("nan")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert viz.log(model, 0) and viz.log(model, 1)
        viz.flush()
    nan_warnings = [w for w in caught if "NaN" in str(w.message)]
    assert len(nan_warnings) == 1 and "'2'" in str(nan_warnings[0].message)
    viz.close()
    logs = load(tmp_path)
    assert logs.steps("run", "2") == [0, 1]
    assert np.isfinite(logs.kernels("run", "2", 1)).all()


def test_log_after_close_is_an_error(tmp_path):
    viz = ConvViz(tmp_path)
    viz.close()
    with pytest.raises(RuntimeError, match="after close"):
        viz.log(_net(), 0)


def test_a_record_cut_short_by_a_full_disk_is_rolled_back(tmp_path, monkeypatch):
    model = _net()
    viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 3, 8, 8), perturbations=False, background=False)
    assert viz.log(model, 0)
    path = viz._writer.path
    size = os.path.getsize(path)
    monkeypatch.setattr(os, "write", writes_cut_short(lambda: viz._writer._fd))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert not viz.log(model, 1)
        assert os.path.getsize(path) == size  # back to the last whole step
        monkeypatch.undo()
        assert viz.log(model, 2)
        viz.close()
    assert [str(w.message) for w in caught if "No space" in str(w.message)] and len(caught) == 1  # close() adds none
    assert load(tmp_path).steps("run", "0") == [0, 2]  # readable past the failed step


def test_labels_outside_the_models_classes_fail_at_first_log(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    viz = ConvViz(tmp_path, probe=(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 5, 7])), impact=True)
    with pytest.raises(ValueError, match=r"probe labels \[5, 7\] are outside the model's 3 classes"):
        viz.log(model, 0)


@pytest.mark.parametrize("background", [False, True])
def test_a_failed_first_log_leaves_no_file_and_nothing_open(tmp_path, background):
    viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 5, 8, 8), background=background)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)
        with pytest.raises(ValueError, match="does not fit"):
            viz.log(_net(), 0)
        viz.close()
    assert list((tmp_path / "run").iterdir()) == []


def test_a_probe_with_few_examples_per_class_warns_once_at_construction(tmp_path):
    labels = torch.tensor([0] * 10 + [1, 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ConvViz(tmp_path, probe=(torch.randn(12, 3, 8, 8), labels), impact=True)
        ConvViz(tmp_path, probe=(torch.randn(12, 3, 8, 8), labels), impact=False)  # no per-class numbers: no warning
    (warning,) = [w for w in caught if "examples of 2 class(es)" in str(w.message)]
    assert "1: 1, 2: 1" not in str(warning.message) and "1 (1), 2 (1)" in str(warning.message)
    assert "training goes on" not in str(warning.message)  # said before any training


def test_a_second_live_convviz_on_a_run_warns_at_construction(tmp_path):
    with pytest.raises(ValueError):
        ConvViz(tmp_path / "run", layers=["nope"]).log(_net(), 0)  # wrote nothing: not a writer of the run
    first = ConvViz(tmp_path / "run", probe=torch.randn(2, 3, 8, 8), perturbations=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first.log(_net(), 0)
        first.flush()  # its worker has written
    assert not [w for w in caught if "another ConvViz" in str(w.message)]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ConvViz(tmp_path / "run").close()
        ConvViz(tmp_path / "other").close()
    (warning,) = [w for w in caught if "another ConvViz is writing" in str(w.message)]
    assert str(tmp_path / "run") in str(warning.message) and "its own folder" in str(warning.message)
    first.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ConvViz(tmp_path / "run").close()  # the first one is closed: nothing to say
    assert not [w for w in caught if "another ConvViz" in str(w.message)]


def test_a_live_writer_in_another_process_is_named_at_construction(tmp_path):
    job = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("crashing_job.py")), str(tmp_path / "run"), "0", "3", "0", "--kill", "1", "0"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )
    try:
        assert job.stdout.readline().strip() == "READY"  # step 0 written, the job still running
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ConvViz(tmp_path / "run").close()
        assert [w for w in caught if "another ConvViz is writing" in str(w.message)]
    finally:
        job.kill()
        job.wait()


def test_a_step_that_does_not_increase_warns_once_and_the_last_version_shows(tmp_path):
    model = _net()
    viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 3, 8, 8), perturbations=False, background=False)
    for step in range(3):
        viz.log(model, step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with torch.no_grad():
            model[0].weight.mul_(-1)
        viz.log(model, 1)
        with torch.no_grad():
            model[0].weight.mul_(2)
        viz.log(model, 1)
        viz.log(model, 0)
    viz.close()
    (warning,) = [w for w in caught if "not greater than the last logged step" in str(w.message)]
    assert "step 1 is not greater than the last logged step 2" in str(warning.message)
    logs = load(tmp_path)
    assert logs.steps("run", "0") == [0]  # step 0 came last: later steps are dropped, as on a restart
    np.testing.assert_allclose(logs.kernels("run", "0", 0), model[0].weight.detach().numpy(), atol=0.02)


def test_every_reader_resolves_a_step_to_its_last_committed_version_whole():
    """Whatever a loader kept of a step written three times (the Python one the first record of
    each step, the Rust one the last), the step shows only the records stamped like its latest
    commit, and not at all when no version of it was committed."""
    from collections import namedtuple

    from tb_convviz.schema.commits import whole_records

    Datum = namedtuple("Datum", "step wall_time")
    commits = [Datum(0, 1.0), Datum(1, 2.0), Datum(1, 5.0)]  # step 1: versions at 2.0 and 5.0 committed, 3.0 crashed
    kept_by_rust = [Datum(0, 1.0), Datum(1, 3.0), Datum(2, 6.0)]  # a crashed version's leftover tag, an uncommitted step
    assert whole_records(kept_by_rust, commits, stamped=True) == [Datum(0, 1.0)]
    both = [Datum(0, 1.0), Datum(1, 2.0), Datum(1, 3.0), Datum(1, 5.0)]
    assert whole_records(both, commits, stamped=True) == [Datum(0, 1.0), Datum(1, 5.0)]
    assert whole_records(both, [], stamped=True) == []  # before the first commit, nothing is whole
    assert whole_records(both, [], stamped=False) == both  # logs from before commit records


def test_a_warning_given_at_close_does_not_say_training_goes_on(tmp_path, monkeypatch):
    def broken(acts):
        raise ArithmeticError("analysis bug")

    monkeypatch.setattr(collect_module, "activation_stats", broken)
    viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 3, 8, 8), perturbations=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        viz.log(_net(), 0)  # analysed in the background: the failure is told at close
        viz.close()
    (warning,) = [str(w.message) for w in caught if "analysis bug" in str(w.message)]
    assert "training goes on" not in warning and warning.endswith("this warning is not repeated")
