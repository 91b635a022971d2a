"""Exact filter ablation (tb_convviz.analysis.ablation) against the reference: one full forward per filter."""
from __future__ import annotations

import contextlib
import warnings
from typing import Callable

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from models import every_conv_kind
from torch import nn

from tb_convviz.analysis.ablation import FilterAblation, ablated_logits
from tb_convviz.model.layers import CONV_TYPES


def naive_ablation(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The reference: one full forward per filter with a hook zeroing its channel → (F, N, K)."""
    module = model.get_submodule(layer)
    rows = []
    with torch.no_grad():
        for f in range(module.out_channels):

            def zero(_m: nn.Module, _i: tuple, out: torch.Tensor, f: int = f) -> torch.Tensor:
                out = out.clone()
                out[:, f] = 0
                return out

            handle = module.register_forward_hook(zero)
            try:
                rows.append(model(x))
            finally:
                handle.remove()
    return torch.stack(rows)


def randomized(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, then eval mode."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    return model.eval()


def conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, CONV_TYPES)]


class Block(nn.Module):
    """A ResNet basic block; in-place ReLU and += on purpose (they must not corrupt cached values)."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.down is None else self.down(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TinyResNet(nn.Module):
    def __init__(self, classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU(inplace=True)  # directly after a conv: rewrites the conv output in place
        self.layer1 = Block(8, 8, 1)
        self.layer2 = Block(8, 16, 2)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.size(0)  # a batch size read at the top and used at the bottom
        out = self.layer2(self.layer1(self.act(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(out, 1).view(n, -1))


class Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.fc = nn.Linear(6, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv(x))
        if h.mean() > 0:
            h = h + torch.relu(self.conv2(h))
        return self.fc(h.mean(dim=(2, 3)))


def sequential_flatten() -> nn.Module:
    """VGG-like: max pooling, flatten of a 4x4 map (channel k is a block of 16 features) and a
    head that is not linear after it (Linear → Tanh → Linear)."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 5, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 7), nn.Tanh(), nn.Linear(7, 4),
    )  # fmt: skip


class GroupedDepthwise(nn.Module):
    """Grouped (2 groups of 4 channels), depthwise and depthwise-with-multiplier convs, between
    an ordinary conv and a 1x1 conv, with a circular-padded conv and a nonlinear head."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.bn2 = nn.BatchNorm2d(8)
        self.multiplier = nn.Conv2d(8, 16, 3, padding=1, groups=8, bias=False)
        self.circular = nn.Conv2d(16, 6, 3, padding=1, padding_mode="circular")
        self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn(self.conv(x)))
        h = F.relu(self.grouped(h))
        h = F.relu(self.bn2(self.depthwise(h)))
        h = F.relu6(self.multiplier(h))
        h = F.gelu(self.circular(h)).mean(dim=(2, 3))
        return self.fc2(torch.sigmoid(self.fc1(h)))


class Conv1dNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv1d(3, 6, 5, padding=2)
        self.c2 = nn.Conv1d(6, 8, 3, stride=2, padding=1, dilation=1)
        self.bn = nn.BatchNorm1d(8)
        self.c3 = nn.Conv1d(8, 8, 3, padding=2, dilation=2, padding_mode="reflect")
        self.fc = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.c1(x[:, :, 0]), 0.1)  # (N, 3, 12) signals cut from the images
        h = torch.relu(self.bn(self.c2(h)))
        h = torch.tanh(self.c3(h))
        return self.fc(F.adaptive_max_pool1d(h, 1).flatten(1))


class TransposeNet(nn.Module):
    """A ConvTranspose downstream of a conv (mixing op) and as the ablated layer."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(6, 4, 3, stride=2, padding=1, output_padding=1, groups=2)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.up(F.elu(self.conv(x)))
        h = F.interpolate(torch.relu(h), scale_factor=0.5, mode="bilinear", align_corners=False)
        return self.fc(torch.relu(self.conv2(h)).amax(dim=(2, 3)))


class BranchyNet(nn.Module):
    """Channel concatenation (DenseNet), a squeeze-excitation gate (x · sigmoid(fc(pool x))), a conv
    module called twice, a conv → BatchNorm with no nonlinearity before the head."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.grow = nn.Conv2d(4, 4, 3, padding=1)
        self.squeeze, self.excite = nn.Linear(8, 2), nn.Linear(2, 8)
        self.shared = nn.Conv2d(8, 8, 1)
        self.last = nn.Conv2d(8, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = torch.relu(self.stem(x))
        h = torch.cat([s, torch.relu(self.grow(s))], dim=1)
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(h.mean(dim=(2, 3))))))
        h = h * gate[:, :, None, None]
        h = torch.relu(self.shared(torch.relu(self.shared(h))))
        h = self.bn(self.last(h))
        return self.fc(F.avg_pool2d(h, 2).mean(dim=(2, 3)) - 0.5)


class InplaceAlias(nn.Module):
    """relu_ rewrites a conv output that a later add still reads: a cache of values as they were
    produced is stale for that reader, so only full forwards are exact."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        r = F.relu(h, inplace=True)  # h is now relu(h) too
        out = self.conv2(r) + h
        return self.fc(out.mean(dim=(2, 3)))


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {
    "sequential_flatten_nonlinear_head": sequential_flatten,
    "residual_bn_inplace_relu": TinyResNet,
    "grouped_depthwise_circular": GroupedDepthwise,
    "conv1d": Conv1dNet,
    "conv_transpose": TransposeNet,
    "every_conv_kind": every_conv_kind,
    "cat_gate_reused_conv": BranchyNet,
}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_fx_ablation_equals_naive(name: str) -> None:
    torch.manual_seed(0)
    model = randomized(ARCHITECTURES[name]())
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    if name == "every_conv_kind":
        x = x[..., :8, :8]
    names = conv_names(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback allowed: the fx engine must handle every one exactly
        clean, ablated = ablated_logits(model, names, x, method="fx", max_batch=12)  # several passes per layer
    with torch.no_grad():
        np.testing.assert_allclose(clean, model(x), atol=1e-5)
    for layer in names:
        np.testing.assert_allclose(ablated[layer], naive_ablation(model, layer, x), atol=1e-5, err_msg=layer)


def test_hook_fallback_equals_naive_on_untraceable_model() -> None:
    torch.manual_seed(0)
    model = Untraceable().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="cannot trace"):
        _, ablated = ablated_logits(model, ["conv", "conv2"], x, max_batch=6)
    for name in ("conv", "conv2"):
        np.testing.assert_allclose(ablated[name], naive_ablation(model, name, x), atol=1e-5)


def test_inplace_write_into_a_value_read_later_falls_back_to_hooks_exactly() -> None:
    torch.manual_seed(0)
    model = InplaceAlias().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="below .conv2. failed .it does not reproduce the clean logits.; using forward hooks"):
        _, ablated = ablated_logits(model, ["conv", "conv2"], x)
    for name in ("conv", "conv2"):
        np.testing.assert_allclose(ablated[name], naive_ablation(model, name, x), atol=1e-5)


def count_checks(monkeypatch) -> list:
    """Every unablated replay (the check that a plan reproduces the clean logits) FilterAblation makes."""
    from tb_convviz.analysis import ablation

    checks, real = [], ablation.replay
    monkeypatch.setattr(ablation, "replay", lambda probe, plan, filters, identity=False: (
        checks.append(plan) if identity else None, real(probe, plan, filters, identity))[1])
    return checks


@pytest.mark.parametrize("name", ["residual_bn_inplace_relu", "inplace_alias"])
def test_a_layers_replay_is_checked_at_the_first_log_only(name: str, monkeypatch) -> None:
    """The check is about the graph, not the weights: a later FilterAblation of the same model
    object (the callback's next log) skips it, picks the replay (or hooks) the first one settled
    on, and is still exact after the weights changed."""
    torch.manual_seed(0)
    model = randomized(TinyResNet()) if name == "residual_bn_inplace_relu" else InplaceAlias().eval()
    layers = conv_names(model)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    checks = count_checks(monkeypatch)
    if name == "inplace_alias":
        with pytest.warns(UserWarning, match="using forward hooks"):
            ablated_logits(model, layers, x)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ablated_logits(model, layers, x)
    assert len(checks) >= len(layers)
    first = len(checks)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fallback is noticed once, at the log that found it
        _, ablated = ablated_logits(model, layers, x)
    assert len(checks) == first  # no check at the second log
    for layer in layers:
        np.testing.assert_allclose(ablated[layer], naive_ablation(model, layer, x), atol=1e-5, err_msg=layer)
    again = pytest.warns(UserWarning, match="using forward hooks") if name == "inplace_alias" else contextlib.nullcontext()
    with again:
        ablated_logits(model, layers, x[:2])  # another probe shape is checked again
    assert len(checks) > first


@pytest.mark.parametrize("method", ["fx", "hooks"])
def test_a_filter_subset_gives_those_rows_in_order(method: str) -> None:
    torch.manual_seed(0)
    model = randomized(TinyResNet())
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    _, full = ablated_logits(model, ["stem", "layer2.conv1"], x, method=method)
    _, part = ablated_logits(model, ["stem", "layer2.conv1"], x, method=method, filters={"stem": [5, 0, 2], "layer2.conv1": []})
    np.testing.assert_allclose(part["stem"], full["stem"][[5, 0, 2]], atol=1e-6)
    assert part["layer2.conv1"].shape == (0, 3, 5)
    with pytest.raises(ValueError, match="out of range"):
        ablated_logits(model, ["stem"], x, method=method, filters={"stem": [8]})


def test_cost_counts_only_what_the_ablation_changes() -> None:
    """In forward passes per filter: the closed form (last conv → BN → ReLU → pool → linear) is
    nearly free, a stem has almost the whole network below it, hooks cost a full forward."""
    torch.manual_seed(0)
    model = randomized(TinyResNet())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    ablation = FilterAblation(model, x)
    assert ablation.cost("layer2.conv2") < 0.01
    assert 0.3 < ablation.cost("stem") < 1.0
    assert ablation.cost("layer1.conv1") < ablation.cost("stem")
    assert FilterAblation(model, x, method="hooks").cost("layer2.conv2") == 1.0


@pytest.mark.parametrize(
    ("name", "layer", "bound"),
    [
        ("residual_bn_inplace_relu", "layer2.conv1", 0.05),  # one-channel conv2, folded BN, residual add → head
        ("grouped_depthwise_circular", "grouped", 0.2),  # depthwise convs stay channel-wise
        ("grouped_depthwise_circular", "depthwise", 0.2),
        ("conv1d", "c2", 0.15),
        ("conv_transpose", "up", 0.2),
        ("sequential_flatten_nonlinear_head", "0", 0.15),  # max pooling, then a one-channel conv
    ],
)
def test_the_channel_wise_replay_is_what_runs(name: str, layer: str, bound: float) -> None:
    """Replaying everything below these layers would cost 0.26–0.69 forwards per filter; the
    channel-block plan costs a fraction of that (the cost model is exact arithmetic on shapes)."""
    torch.manual_seed(0)
    model = randomized(ARCHITECTURES[name]())
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    assert FilterAblation(model, x, method="fx").cost(layer) < bound


def test_passes_leave_the_callers_grad_mode_alone() -> None:
    model = randomized(TinyResNet())
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    for _ in FilterAblation(model, x, max_batch=2).passes("stem"):
        assert torch.is_grad_enabled()
