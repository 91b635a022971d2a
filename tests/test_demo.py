"""The demos run end to end on tiny settings: real training, real event files, read back with `load`."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tb_convviz import load

DEMO_DIR = Path(__file__).resolve().parent.parent / "demo"
sys.path.insert(0, str(DEMO_DIR))  # the demos are scripts that import their sibling demo_common

import digits  # noqa: E402
import mnist1d_demo  # noqa: E402


def check_logged(logdir: Path, layers: list[str], epochs: int) -> None:
    logs = load(str(logdir))
    assert logs.runs() == ["seed0", "seed1"]
    for run in logs.runs():
        assert logs.layers(run) == layers
        for layer in layers:
            assert logs.steps(run, layer) == list(range(epochs + 1))  # step 0 is the untrained model
            assert logs.activations(run, layer, epochs).shape[0] > 0
            assert logs.kernels(run, layer, epochs).ndim >= 3
        images, labels = logs.probe(run)
        assert images.shape[0] == labels.shape[0] == 16
    # conv1 is followed by BatchNorm in both demos: the folded kernels must be there.
    assert logs.effective_kernels("seed0", "conv1", epochs).shape == logs.kernels("seed0", "conv1", epochs).shape


def test_digits_demo_one_epoch(tmp_path: Path) -> None:
    results = digits.main(["--epochs", "1", "--runs", "2", "--logdir", str(tmp_path), "--no-serve"])
    assert [r.run for r in results] == ["seed0", "seed1"]
    assert all(0.0 <= r.test_accuracy <= 1.0 for r in results)
    check_logged(tmp_path, ["conv1", "conv2", "conv3"], epochs=1)


def test_mnist1d_demo_one_epoch(tmp_path: Path) -> None:
    results = mnist1d_demo.main(
        ["--epochs", "1", "--runs", "2", "--samples", "500", "--logdir", str(tmp_path), "--no-serve"]
    )
    assert [r.run for r in results] == ["seed0", "seed1"]
    check_logged(tmp_path, ["conv1", "conv2", "conv3"], epochs=1)
    signals, _ = load(str(tmp_path)).probe("seed0")
    assert signals.shape[1:] == (1, 40)


def test_mnist1d_is_generated_not_downloaded(monkeypatch: pytest.MonkeyPatch) -> None:
    import mnist1d.data

    def no_network(*args, **kwargs):
        raise AssertionError("the demo must not download MNIST-1D")

    monkeypatch.setattr(mnist1d.data.requests, "get", no_network)
    train, test = mnist1d_demo.make_mnist1d(samples=200)
    assert train.x.shape == (160, 1, 40) and test.x.shape == (40, 1, 40)
    assert set(train.y.tolist()) <= set(range(10))


@pytest.mark.parametrize("demo", [digits, mnist1d_demo])
def test_bad_arguments_are_named(demo, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        demo.main(["--epochs", "0", "--no-serve"])
    assert "--epochs must be at least 1" in capsys.readouterr().err


def test_running_a_demo_again_replaces_its_runs(tmp_path: Path) -> None:
    args = ["--epochs", "1", "--runs", "1", "--samples", "200", "--logdir", str(tmp_path), "--no-serve"]
    mnist1d_demo.main(args)
    mnist1d_demo.main(args)
    assert len(list((tmp_path / "seed0").glob("events.out.tfevents.*"))) == 1
    assert load(str(tmp_path)).steps("seed0", "conv1") == [0, 1]


def test_a_demo_serves_on_a_free_port_when_the_default_is_taken(monkeypatch, capsys):
    """The README's walkthrough runs a second demo while the first still serves 6006: it must not
    end in TensorBoardPortInUseError but pick a free port and say which."""
    import socket

    import demo_common

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        monkeypatch.setattr(demo_common, "DEFAULT_PORT", taken)
        port = demo_common.port_to_serve(None)
        assert port != taken and 0 < port < 65536
        said = capsys.readouterr().out
        assert f"Port {taken} is taken" in said and f"using {port}" in said
    assert demo_common.port_to_serve(1234) == 1234  # asked for: kept
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        unused = free.getsockname()[1]
    monkeypatch.setattr(demo_common, "DEFAULT_PORT", unused)
    assert demo_common.port_to_serve(None) == unused
