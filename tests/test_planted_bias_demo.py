"""The planted-bias demo end to end on tiny settings: the model learns the corner marker, and the
logs, read back with `tb_convviz.load`, flag the filters that carry it."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tb_convviz import load

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "demo"))  # demos import demo_common

import planted_bias  # noqa: E402

EPOCHS = 3


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, planted_bias.BiasResult]:
    logdir = tmp_path_factory.mktemp("bias")
    [result] = planted_bias.main(["--epochs", str(EPOCHS), "--logdir", str(logdir), "--no-serve"])
    return logdir, result


def test_the_model_relies_on_the_marker(trained) -> None:
    _, result = trained
    reliance = result.reliance
    # Without the marker almost no other digit is called the target; with it, most are.
    assert reliance.clean_rate < 0.1
    assert reliance.marked_rate > reliance.clean_rate + 0.4
    assert result.run.test_accuracy > 0.5  # it did learn digits, too


def test_the_logs_flag_the_filters_that_see_the_marker(trained) -> None:
    logdir, result = trained
    logs = load(str(logdir))
    layers = logs.layers("seed0")
    assert layers == ["conv1", "conv2", "conv3"]
    images, labels = logs.probe("seed0")
    marked = 16
    # The probe's first 16 images carry the marker (within the q8 tolerance), the rest do not.
    marker = planted_bias.Marker(6, on=float(images.max()), off=float(images.min()))
    corner = images[:, :, :6, :6]
    pasted = marker.add(torch.from_numpy(images)).numpy()[:, :, :6, :6]
    tolerance = (images.max() - images.min()) / 255
    assert np.abs(corner[:marked] - pasted[:marked]).max() <= tolerance
    assert np.abs(corner[marked:] - pasted[marked:]).max(axis=(1, 2, 3)).min() > 0.5

    flagged = []
    for layer in layers:
        for name in planted_bias.COUNTERFACTUALS:
            response = logs.tuning("seed0", layer, EPOCHS, name)
            assert set(response) == {"change", "ci", "p", "q", "cosine", "z", "flag"}
            for f in np.flatnonzero(response["flag"]):
                # Adding the marker excites a flagged filter, removing it quiets it, and its paired
                # test over the probe images says the change is real; its interval excludes 0.
                assert (response["change"][f] > 0) == (name == "add marker")
                assert response["q"][f] <= 0.05 and (response["ci"][f, 0] > 0 or response["ci"][f, 1] < 0)
                flagged.append((layer, int(f)))
    assert flagged, "no filter was flagged for either marker edit"
    # The flagged filters fire most on marked probe images.
    tops = [logs.top_examples("seed0", layer, EPOCHS)["index"][f] for layer, f in flagged]
    assert max(int((top < marked).sum()) for top in tops) >= 4
    # The demo's own report says the same.
    assert {(f.layer, f.filter) for fs in result.flagged.values() for f in fs} == set(flagged)
    assert all(np.isfinite(f.d_accuracy) for fs in result.flagged.values() for f in fs)


def test_the_counterfactuals_edit_only_the_corner() -> None:
    marker = planted_bias.Marker(4, on=2.0, off=-1.0)
    images = torch.zeros(2, 1, 32, 32)
    added = marker.add(images)
    assert added[0, 0, :4, :4].tolist()[0] == [2.0, -1.0, 2.0, -1.0]
    assert (added[..., 4:, :] == 0).all() and (added[..., :, 4:] == 0).all()
    assert (marker.remove(added)[..., :4, :4] == -1.0).all()
    assert (images == 0).all()  # the edits copy


def test_bad_arguments_are_named(capsys: pytest.CaptureFixture) -> None:
    for argv, message in ((["--rate", "0"], "--rate must be in (0, 1]"), (["--target", "10"], "--target must be a digit")):
        with pytest.raises(SystemExit):
            planted_bias.main([*argv, "--no-serve"])
        assert message in capsys.readouterr().err
