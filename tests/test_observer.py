"""Logging must not change training: bitwise state before == after, and no hook left behind."""
import copy
import random

import numpy as np
import pytest
import torch
from torch import nn

from models import bn_cnn, probe_images
from tb_convviz import ConvViz, load


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "hooks": [
            (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()
        ],
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state()[1].copy(),
        "python_rng": random.getstate(),
        "grad_enabled": torch.is_grad_enabled(),
    }


def _assert_same(before: dict, after: dict) -> None:
    assert before["state"].keys() == after["state"].keys()
    for k in before["state"]:
        assert torch.equal(before["state"][k], after["state"][k]), k  # bitwise, incl. num_batches_tracked
    assert before["training"] == after["training"]
    assert before["requires_grad"] == after["requires_grad"]
    for a, b in zip(before["grads"], after["grads"]):
        assert (a is None and b is None) or torch.equal(a, b)
    assert before["hooks"] == after["hooks"]
    assert torch.equal(before["torch_rng"], after["torch_rng"])
    assert np.array_equal(before["numpy_rng"], after["numpy_rng"])
    assert before["python_rng"] == after["python_rng"]
    assert before["grad_enabled"] == after["grad_enabled"]


@pytest.mark.parametrize("background", [False, True])
def test_log_leaves_a_training_batchnorm_model_bitwise_unchanged(tmp_path, background):
    model = bn_cnn()
    model.train()
    model[4].eval()  # a mixed train/eval state must survive too
    model[0].weight.requires_grad_(False)
    loss = model(torch.randn(4, 3, 8, 8)).sum()
    loss.backward()  # grads present, as they are mid-training
    viz = ConvViz(
        tmp_path,
        probe=(probe_images(size=8), torch.tensor([0, 1, 2, 0])),
        impact=True,  # ablation and Taylor backward passes run too
        counterfactuals={"darker": lambda batch: batch * 0.5},
        background=background,
        feature_vis={"filters": "all", "steps": 4},  # gradients w.r.t. images, through the model's own modules inline
    )
    for epoch in range(2):
        before = _snapshot(model)
        assert viz.log(model, epoch)
        viz.flush()
        _assert_same(before, _snapshot(model))
    viz.close()
    assert load(tmp_path).steps(load(tmp_path).runs()[0], "0", "impact") == [0, 1]
    assert load(tmp_path).steps(load(tmp_path).runs()[0], "4", "feature_vis") == [0, 1]


@pytest.mark.parametrize("background", [False, True])
def test_training_with_and_without_logging_is_identical(tmp_path, background):
    def train(log: bool) -> dict:
        torch.manual_seed(3)
        np.random.seed(3)
        model = bn_cnn()
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        probe = (probe_images(size=8), torch.tensor([0, 1, 2, 0]))
        viz = ConvViz(tmp_path / str(log), probe=probe, impact=True, background=background) if log else None
        for epoch in range(3):
            x = torch.randn(8, 3, 8, 8)
            loss = nn.functional.cross_entropy(model(x), torch.randint(0, 3, (8,)))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if viz:
                viz.log(model, epoch)  # in the background, the analysis overlaps the next epoch
        if viz:
            viz.close()
        return {**model.state_dict(), "rng": torch.get_rng_state()}

    with_log, without = train(True), train(False)
    for k in without:
        assert torch.equal(with_log[k], without[k]), k


def test_data_parallel_is_unwrapped_and_channels_last_works(tmp_path):
    model = bn_cnn().to(memory_format=torch.channels_last)
    wrapped = nn.DataParallel(model)
    probe = probe_images(size=8).double().numpy()  # numpy float64: converted to the model's dtype
    viz = ConvViz(tmp_path, probe=probe)
    before = _snapshot(model)
    assert viz.log(wrapped, 0)
    _assert_same(before, _snapshot(model))
    viz.close()
    logs = load(tmp_path)
    run = logs.runs()[0]
    assert logs.layers(run) == ["0", "4"]  # names of the inner model, no "module." prefix
    np.testing.assert_allclose(logs.kernels(run, "0", 0), model[0].weight.detach().numpy(), atol=0.01)


def test_hooks_are_removed_even_when_the_forward_fails(tmp_path):
    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.fail = False

        def forward(self, x):
            y = self.conv(x)
            if self.fail:
                raise RuntimeError("boom")
            return y

    model = Flaky()
    viz = ConvViz(tmp_path, probe=torch.randn(1, 1, 5, 5), background=False)  # `fail` is no weight: inline only
    assert viz.log(model, 0)
    model.fail = True
    model.train()
    import warnings

    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert not viz.log(model, 1)
    assert len(model.conv._forward_hooks) == 0
    assert model.training and model.conv.training
    viz.close()


def test_model_copy_is_not_needed_for_models_with_custom_buffers(tmp_path):
    class Counting(nn.Module):
        """A model that mutates a buffer even in eval mode: the observer restores it."""

        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x):
            self.calls += 1
            return self.conv(x)

    model = Counting()
    reference = copy.deepcopy(model.state_dict())
    viz = ConvViz(tmp_path, probe=torch.randn(1, 1, 5, 5))
    viz.log(model, 0)
    viz.close()
    assert torch.equal(model.calls, reference["calls"])
