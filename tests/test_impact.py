"""Planted-truth tests for tb_convviz.analysis.impact and the exact ablation engine."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz.analysis.ablation import ablated_logits
from tb_convviz.analysis.impact import class_selectivity, filter_impact, spearman, top_activating


def naive_ablation(model: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """The reference: one full forward per filter with a hook zeroing its channel → (F, N, K)."""
    module = model.get_submodule(layer)
    rows = []
    with torch.no_grad():
        channels = module.out_channels
        for f in range(channels):

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


def randomized(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine terms, then eval mode."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.weight.copy_(0.5 + torch.rand(m.num_features, generator=gen))
                m.bias.copy_(0.1 * torch.randn(m.num_features, generator=gen))
    return model.eval()


def _conv_names(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def test_fx_ablation_equals_naive_on_residual_model() -> None:
    torch.manual_seed(0)
    model = randomized(TinyResNet())
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    names = _conv_names(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback allowed: the fx engine must handle this model
        clean, ablated = ablated_logits(model, names, x, method="fx", max_batch=12)  # 3 filters per pass
    np.testing.assert_allclose(clean, model(x).detach(), atol=1e-5)
    for name in names:
        np.testing.assert_allclose(ablated[name], naive_ablation(model, name, x), atol=1e-5, err_msg=name)


def test_hook_fallback_equals_naive_on_untraceable_model() -> None:
    torch.manual_seed(0)
    model = Untraceable().eval()
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with pytest.warns(UserWarning, match="cannot trace"):
        _, ablated = ablated_logits(model, ["conv", "conv2"], x, max_batch=6)
    for name in ("conv", "conv2"):
        np.testing.assert_allclose(ablated[name], naive_ablation(model, name, x), atol=1e-5)


class OneCarrier(nn.Module):
    """conv1 → ReLU → global mean → linear; only filter CARRIER feeds the decision (others at 1e-3)."""

    CARRIER = 3

    def __init__(self, threshold: float):
        super().__init__()
        gen = torch.Generator().manual_seed(3)
        self.conv1 = nn.Conv2d(1, 8, 5, padding=2, bias=False)
        self.head = nn.Linear(8, 2)
        with torch.no_grad():
            self.conv1.weight.copy_(0.2 * torch.randn(8, 1, 5, 5, generator=gen))
            bar = torch.full((5, 5), -0.5)
            bar[:, 2] = 1.0  # a vertical-bar detector
            self.conv1.weight[self.CARRIER, 0] = bar
            self.head.weight.copy_(1e-3 * torch.randn(2, 8, generator=gen))
            self.head.weight[:, self.CARRIER] = torch.tensor([0.0, 10.0])
            self.head.bias.copy_(torch.tensor([0.0, -10.0 * threshold]))
        self.eval()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv1(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def bar_probe() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """20 images per class; class 1 has a vertical bar, and so do 4 class-0 images (the model's errors)."""
    gen = torch.Generator().manual_seed(4)
    x = 0.3 * torch.randn(40, 1, 16, 16, generator=gen)
    y = torch.tensor([0] * 20 + [1] * 20)
    has_bar = torch.zeros(40, dtype=torch.bool)
    has_bar[20:] = True
    has_bar[:4] = True
    cols = torch.randint(3, 13, (40,), generator=gen)
    for i in torch.nonzero(has_bar).flatten():
        x[i, 0, :, cols[i]] += 2.0
    return x, y, has_bar


@pytest.fixture(scope="module")
def carrier_case() -> tuple[OneCarrier, torch.Tensor, torch.Tensor, dict]:
    x, y, has_bar = bar_probe()
    probe_model = OneCarrier(threshold=0.0)
    with torch.no_grad():
        f = probe_model.features(x)[:, OneCarrier.CARRIER]
    threshold = float((f[has_bar].min() + f[~has_bar].max()) / 2)  # separates bar from no bar
    model = OneCarrier(threshold)
    res = filter_impact(model, {"conv1": model.conv1}, x, y, top_k=5)["conv1"]
    return model, x, y, res


def test_one_filter_carries_the_label(carrier_case) -> None:
    _, _, _, res = carrier_case
    c = OneCarrier.CARRIER
    assert float(res["accuracy"]) == pytest.approx(0.9)  # wrong exactly on the 4 barred class-0 images
    assert float(res["accuracy"] + res["d_accuracy"][c]) == pytest.approx(0.5)  # chance for 2 balanced classes
    others = np.arange(8) != c
    assert np.abs(res["d_accuracy"][others]).max() < 0.01
    assert res["flips"][c] == 24 and (res["flips"][others] == 0).all()  # every class-1 prediction flips
    np.testing.assert_allclose(res["d_recall"][c], [0.2, -1.0], atol=1e-6)  # class 0: 16/20 → 20/20
    assert res["d_precision"][c, 1] == pytest.approx(-20 / 24)  # 20 of 24 class-1 predictions were right, then none
    assert res["d_confidence"][c] < -0.2 and np.abs(res["d_confidence"][others]).max() < 0.01
    assert res["d_loss"].argmax() == c
    # first order misjudges the sign here (the 4 errors sit on a steep logistic), but not who matters
    assert np.abs(res["taylor_d_loss"]).argmax() == c
    assert res["d_recall"].shape == (8, 2) and res["class_support"].tolist() == [20, 20]


def test_carrier_fires_on_errors_and_its_top_examples_are_one_class(carrier_case) -> None:
    _, _, y, res = carrier_case
    _, _, has_bar = bar_probe()
    c = OneCarrier.CARRIER
    assert res["act_on_errors"][c] > 1.2 * res["act_on_correct"][c]  # errors all have a bar, correct half
    assert res["topk_index"].shape == (8, 5) and res["topk_label"].shape == (8, 5)
    np.testing.assert_array_equal(res["topk_label"], y.numpy()[res["topk_index"]])
    assert has_bar[res["topk_index"][c]].all()  # the bar detector's best examples all have a bar
    assert res["topk_class"][c] == 1 and res["topk_concentration"][c] >= 0.6
    assert res["class_selectivity"].shape == (8,)
    assert res["taylor_spearman"].shape == () and -1 <= float(res["taylor_spearman"]) <= 1


def test_class_selectivity_planted() -> None:
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    scores = torch.stack(
        [
            torch.tensor([0.0, 0.0, 0.0, 0.0, 3.0, 5.0]),  # fires for class 2 only
            torch.full((6,), 2.0),  # no class preference
            torch.zeros(6),  # silent
            torch.tensor([1.0, 1.0, 1.0, 1.0, 3.0, 3.0]),  # (3 − 1) / (3 + 1)
        ],
        dim=1,
    )
    np.testing.assert_allclose(class_selectivity(scores, y), [1.0, 0.0, 0.0, 0.5], atol=1e-6)


def test_spearman_with_ties_and_constant() -> None:
    a = np.array([1.0, 2.0, 2.0, 3.0, 5.0])
    b = np.array([2.0, 1.0, 4.0, 3.0, 9.0])
    # Spearman is Pearson on ranks; the tie in a shares ranks 1 and 2
    ra, rb = np.array([0, 1.5, 1.5, 3, 4]), np.array([1, 0, 3, 2, 4.0])
    expected = np.corrcoef(ra, rb)[0, 1]
    assert spearman(a, b) == pytest.approx(expected)
    assert spearman(np.arange(5), np.arange(5) ** 3) == pytest.approx(1.0)
    assert spearman(np.arange(4), -np.arange(4)) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(4), np.arange(4)))


def test_top_activating_concentration() -> None:
    y = torch.tensor([0, 1, 1, 1, 2, 1])
    scores = torch.tensor([[0.0, 9.0], [5.0, 1.0], [6.0, 2.0], [7.0, 0.0], [1.0, 8.0], [8.0, 3.0]])
    res = top_activating(scores, y, 3)
    assert res["topk_index"].tolist() == [[5, 3, 2], [0, 4, 5]]
    assert res["topk_class"].tolist()[0] == 1 and res["topk_flag"].tolist() == [True, False]
    np.testing.assert_allclose(res["topk_concentration"], [1.0, 1 / 3])


@pytest.mark.parametrize("make", [lambda: randomized(TinyResNet()), lambda: Untraceable().eval()])
def test_impact_leaves_model_grad_hooks_and_rng(make) -> None:
    torch.manual_seed(0)
    model = make()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    grads = [p.grad for p in model.parameters()]
    weights = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    rng = torch.get_rng_state()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the untraceable model warns about its fallback
        res = filter_impact(model, layers, x, y)
    assert set(res) == set(layers)
    assert torch.equal(rng, torch.get_rng_state())
    for p, g, w in zip(model.parameters(), grads, weights):
        assert p.grad is g and (g == 7.0).all()
        assert torch.equal(p.detach(), w)
    for b, saved in zip(model.buffers(), buffers):
        assert torch.equal(b, saved)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
