"""Planted-truth tests for tb_convviz.analysis.impact (the ablation engine: test_ablation.py)."""
from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_ablation import TinyResNet, Untraceable, randomized
from torch import nn

from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz.analysis.ablation import FilterAblation
from tb_convviz.analysis.impact import (
    CALIBRATION_SHARE,
    SAMPLE_MIN,
    class_selectivity,
    exact_plan,
    filter_impact,
    finish_impact,
    merge_impact,
    per_class_deltas,
    spearman,
    top_activating,
    top_example_summary,
)


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
    _, _, y, res = carrier_case
    c = OneCarrier.CARRIER
    assert res["exact"].all()  # 8 filters of a tiny net fit any budget
    assert float(res["accuracy"]) == pytest.approx(0.9)  # wrong exactly on the 4 barred class-0 images
    assert float(res["accuracy"] + res["d_accuracy"][c]) == pytest.approx(0.5)  # chance for 2 balanced classes
    others = np.arange(8) != c
    assert np.abs(res["d_accuracy"][others]).max() < 0.01
    assert res["flips"][c] == 24 and (res["flips"][others] == 0).all()  # every class-1 prediction flips
    # 20 class-1 images go right → wrong, the 4 barred class-0 errors go wrong → right
    assert res["discordant"][c].tolist() == [20, 4] and (res["discordant"][others] == 0).all()
    assert (res["flip_filter"] == c).all() and (res["flip_pred"] == 0).all() and len(res["flip_image"]) == 24
    assert res["clean_pred"].tolist() == [1] * 4 + [0] * 16 + [1] * 20
    per_class = per_class_deltas(y.numpy(), res["clean_pred"], res["flip_filter"], res["flip_image"], res["flip_pred"], 8)
    np.testing.assert_allclose(per_class["d_recall"][c], [0.2, -1.0])  # class 0: 16/20 → 20/20
    assert per_class["d_precision"][c, 1] == pytest.approx(-20 / 24)  # 20 of 24 class-1 predictions were right, then none
    assert per_class["d_precision"][c, 0] == pytest.approx(20 / 40 - 16 / 16)
    assert (per_class["d_recall"][others] == 0).all() and per_class["class_support"].tolist() == [20, 20]
    assert res["d_confidence"][c] < -0.2 and np.abs(res["d_confidence"][others]).max() < 0.01
    assert res["d_loss"].argmax() == c
    # first order misjudges the sign here (the 4 errors sit on a steep logistic), but not who matters
    assert np.abs(res["taylor_d_loss"]).argmax() == c


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


def test_impact_record_leaves_out_what_readers_rebuild_exactly(carrier_case) -> None:
    _, _, y, res = carrier_case
    bundle = fmt.decode_bundle(records.analysis_record(fmt.KIND_IMPACT, res))
    assert not set(records.IMPACT_DERIVED) & set(bundle.names())
    assert bundle._header["discordant"]["enc"] == "i16" and bundle._header["d_accuracy"]["enc"] == "f32"
    rebuilt = records.impact_arrays(bundle, y.numpy())
    for key in records.IMPACT_DERIVED:
        np.testing.assert_array_equal(rebuilt[key], res[key], err_msg=key)
    # Without the probe labels the top examples' summary cannot be rebuilt, the flip counts can.
    assert "topk_label" not in records.impact_arrays(bundle, None) and "flips" in records.impact_arrays(bundle, None)


def test_top_example_summary_breaks_ties_towards_the_smaller_class() -> None:
    labels = np.array([4, 2, 2, 4, 7])
    out = top_example_summary(np.array([[0, 3, 1], [1, 2, 4], [4, 0, 1], [2, 1, 4]]), labels)
    assert out["topk_class"].tolist() == [4, 2, 2, 2]
    np.testing.assert_allclose(out["topk_concentration"], [2 / 3, 2 / 3, 1 / 3, 2 / 3])
    assert out["topk_flag"].tolist() == [False] * 4
    assert top_example_summary(np.array([[1, 2]]), labels)["topk_flag"].tolist() == [True]


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


@pytest.mark.parametrize("traceable", [True, False])
def test_impact_leaves_model_grad_hooks_and_rng(traceable: bool) -> None:
    torch.manual_seed(0)
    model = randomized(TinyResNet()) if traceable else Untraceable().eval()
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)
    grads = [p.grad for p in model.parameters()]
    weights = [p.detach().clone() for p in model.parameters()]
    buffers = [b.clone() for b in model.buffers()]
    x = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(5))
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    rng = torch.get_rng_state()
    np_state = np.random.get_state()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    with contextlib.nullcontext() if traceable else pytest.warns(UserWarning, match="cannot trace"):
        checks = sum(FilterAblation(model, x).check_cost(n) for n in layers)  # the first log's, paid from the budget
        res = filter_impact(model, layers, x, y, exact_budget=checks + 0.5)  # over budget: the random sample is drawn too
    assert set(res) == set(layers)
    assert torch.equal(rng, torch.get_rng_state()) and np_state[1].tolist() == np.random.get_state()[1].tolist()
    for p, g, w in zip(model.parameters(), grads, weights):
        assert p.grad is g and (g == 7.0).all()
        assert torch.equal(p.detach(), w)
    for b, saved in zip(model.buffers(), buffers):
        assert torch.equal(b, saved)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks


class WideFirstLayer(nn.Module):
    """96 filters with a heavy conv3 below the first mixing op: ~0.38 forwards each, 36 in all."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.conv = nn.Conv2d(3, 96, 3, padding=1)
        self.conv2 = nn.Conv2d(96, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.fc = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv(x))))
        return self.fc(torch.relu(self.conv3(h)).mean(dim=(2, 3)))


@pytest.fixture(scope="module")
def wide_case() -> tuple[nn.Module, torch.Tensor, torch.Tensor, dict]:
    torch.manual_seed(0)
    model = WideFirstLayer().eval()
    gen = torch.Generator().manual_seed(6)
    x, y = torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 4, (8,), generator=gen)
    full = filter_impact(model, {"conv": model.conv}, x, y, exact="all")["conv"]
    return model, x, y, full


def test_over_budget_ablates_the_top_taylor_filters_and_a_random_sample(wide_case) -> None:
    model, x, y, full = wide_case
    res = filter_impact(model, {"conv": model.conv}, x, y, exact_budget=20.0, seed=1)["conv"]
    exact, sampled = res["exact"], res["sampled"].astype(bool)
    cost = FilterAblation(model, x).cost("conv")
    top = np.argsort(-np.abs(res["taylor_d_loss"]), kind="stable")
    # The budget bounds everything, the calibration sample included.
    assert sampled.sum() == int(CALIBRATION_SHARE * 20.0 // cost) and exact.sum() * cost <= 20.0
    assert 0 < exact.sum() < 96 and not (sampled & ~exact).any()
    assert exact[top[: (exact & ~sampled).sum()]].all()  # the filters that matter most (by Taylor) are exact
    # exact-only metrics are exact where measured, absent elsewhere; the estimate covers everyone
    np.testing.assert_allclose(res["d_loss"][exact], full["d_loss"][exact], atol=1e-6)
    assert np.isnan(res["d_loss"][~exact]).all() and np.isnan(res["d_accuracy"][~exact]).all()
    assert (res["flips"][~exact] == -1).all() and (res["discordant"][~exact] == -1).all()
    assert not np.isin(res["flip_filter"], np.flatnonzero(~exact)).any()
    assert np.isfinite(res["taylor_d_loss"]).all()
    # The Taylor check is on the random sample only: the top filters would flatter it.
    expected = spearman(res["taylor_d_loss"][sampled], full["d_loss"][sampled])
    assert float(res["taylor_spearman"]) == pytest.approx(expected)


def test_the_first_logs_replay_checks_are_paid_from_the_budget() -> None:
    """Making sure of a layer's replay costs the run's first log two unablated copies of it; they
    come out of exact_budget, and a later log of the same model (the check is not repeated) spends
    them on ablations instead."""
    torch.manual_seed(0)
    model = WideFirstLayer().eval()
    gen = torch.Generator().manual_seed(6)
    x, y = torch.randn(8, 3, 8, 8, generator=gen), torch.randint(0, 4, (8,), generator=gen)
    fresh = FilterAblation(model, x)
    cost, check = fresh.cost("conv"), fresh.check_cost("conv")
    assert check == pytest.approx(2 * cost)
    first = filter_impact(model, {"conv": model.conv}, x, y, exact_budget=20.0, seed=1)["conv"]["exact"]
    assert FilterAblation(model, x).check_cost("conv") == 0.0
    later = filter_impact(model, {"conv": model.conv}, x, y, exact_budget=20.0, seed=1)["conv"]["exact"]
    assert first.sum() * cost + check <= 20.0 < (first.sum() + 3) * cost + check
    assert later.sum() * cost <= 20.0 and later.sum() > first.sum()


def test_the_calibration_sample_depends_on_the_seed_only(wide_case) -> None:
    model, x, y, _ = wide_case
    runs = [filter_impact(model, {"conv": model.conv}, x, y, exact_budget=20.0, seed=s)["conv"]["exact"] for s in (1, 2, 1)]
    assert not np.array_equal(runs[0], runs[1])
    np.testing.assert_array_equal(runs[0], runs[2])


def test_exact_all_ablates_every_filter(wide_case) -> None:
    _, _, _, full = wide_case
    assert full["exact"].all() and np.isfinite(full["d_loss"]).all() and (full["flips"] >= 0).all()


def test_exact_plan_planted() -> None:
    taylor = {"a": np.arange(100.0) - 80.0, "b": np.arange(20.0), "c": np.arange(400.0), "d": np.arange(400.0) + 1}
    costs = {"a": 1.0, "b": 0.1, "c": 0.5, "d": 0.5}
    budget = 160.0
    plans = [exact_plan(taylor, costs, budget, log, np.random.default_rng(log)) for log in range(6)]
    for plan in plans:
        assert sum(chosen.sum() * costs[n] for n, (chosen, _) in plan.items()) <= budget  # calibration included
        assert plan["b"][0].all() and plan["b"][1].all()  # fits its share (2 of 40): whole, its own check
        assert plan["a"][0][:20].all()  # the largest |Taylor Δloss| (index 0 = 80, 1 = 79, ...) first
        for name, (chosen, sampled) in plan.items():
            assert not (sampled & ~chosen).any(), name
    # Layers over their share take turns at the random sample (32 × 1.0 for "a", 32 × 0.5 for "c" and
    # "d": 64 forwards, two turns of at most 40): every one of them within 2 logs, again and again.
    calibrated = [{n for n in ("a", "c", "d") if plan[n][1].any()} for plan in plans]
    assert sorted(map(sorted, calibrated[:2])) == [["a"], ["c", "d"]]
    assert calibrated == calibrated[:2] * 3
    for plan in plans:
        sample_cost = sum(plan[n][1].sum() * costs[n] for n in ("a", "c", "d"))
        assert sample_cost <= CALIBRATION_SHARE * budget
        assert all(plan[n][1].sum() in (0, SAMPLE_MIN) for n in ("a", "c", "d"))


def dense_per_class(labels: np.ndarray, clean_pred: np.ndarray, ablated_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference: recall and precision changes per (filter, class present) from full predictions (F, N)."""
    classes = np.unique(labels)

    def scores(pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        hit = (pred[..., None] == classes) & (labels[:, None] == classes)  # (..., N, C)
        predicted = (pred[..., None] == classes).sum(-2)
        return hit.sum(-2) / (labels[:, None] == classes).sum(0), hit.sum(-2) / np.maximum(predicted, 1)

    recall0, precision0 = scores(clean_pred)
    recall, precision = scores(ablated_pred)
    return recall - recall0, precision - precision0


def test_per_class_deltas_from_sparse_flips_equal_a_dense_computation() -> None:
    gen = np.random.default_rng(7)
    n, filters = 60, 12
    labels = gen.choice([0, 2, 3, 5, 9], size=n)  # classes 1, 4, 6, 7, 8 absent from the probe
    clean_pred = np.where(gen.random(n) < 0.7, labels, gen.integers(0, 10, n))
    ablated = np.repeat(clean_pred[None], filters, 0)
    flip = gen.random((filters, n)) < 0.15
    ablated[flip] = gen.integers(0, 10, flip.sum())  # some to absent classes, some back to the clean one
    flip_filter, flip_image = np.nonzero(ablated != clean_pred)
    flip_pred = ablated[flip_filter, flip_image]
    got = per_class_deltas(labels, clean_pred, flip_filter, flip_image, flip_pred, filters)
    d_recall, d_precision = dense_per_class(labels, clean_pred, ablated)
    assert got["classes"].tolist() == [0, 2, 3, 5, 9]
    assert got["class_support"].tolist() == [(labels == c).sum() for c in (0, 2, 3, 5, 9)]
    np.testing.assert_allclose(got["d_recall"], d_recall, atol=1e-12)
    np.testing.assert_allclose(got["d_precision"], d_precision, atol=1e-12)
    counts = got["d_recall"] * got["class_support"]
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-9)  # k / support, k an integer
    assert np.abs(counts).max() >= 1  # some recall did change
    some = per_class_deltas(labels, clean_pred, flip_filter, flip_image, flip_pred, [7, 3])
    np.testing.assert_array_equal(some["d_recall"], got["d_recall"][[7, 3]])
    np.testing.assert_array_equal(some["d_precision"], got["d_precision"][[7, 3]])


def test_impact_records_do_not_grow_with_classes() -> None:
    """Same net, probe and labels (classes 0..3) with a 10- and a 1000-class head."""
    gen = torch.Generator().manual_seed(8)
    x, y = torch.randn(16, 3, 8, 8, generator=gen), torch.randint(0, 4, (16,), generator=gen)
    sizes = []
    for classes in (10, 1000):
        torch.manual_seed(0)
        model = randomized(TinyResNet(classes))
        res = filter_impact(model, {"layer2.conv1": model.layer2.conv1}, x, y)["layer2.conv1"]
        sizes.append({k: v.shape for k, v in res.items() if k not in ("flip_filter", "flip_image", "flip_pred")})
        assert res["flip_filter"].size <= 16 * 16  # at most one entry per (filter, image)
    assert sizes[0] == sizes[1]  # no array has a class axis


@pytest.mark.parametrize(("kwargs", "match"), [({"exact": "some"}, "exact must be"), ({"exact_budget": 0}, "exact_budget must be")])
def test_bad_budget_arguments_are_named(kwargs: dict, match: str) -> None:
    model = randomized(TinyResNet())
    with pytest.raises(ValueError, match=match):
        filter_impact(model, {"stem": model.stem}, torch.zeros(2, 3, 8, 8), torch.tensor([0, 1]), **kwargs)


def test_the_carrier_filter_is_significant_and_the_others_are_not(carrier_case) -> None:
    _, _, y, res = carrier_case
    c = OneCarrier.CARRIER
    b, w = res["discordant"][c]
    exact_p = min(1.0, 2 * sum(math.comb(int(b + w), k) for k in range(int(min(b, w)) + 1)) / 2 ** int(b + w))
    assert res["p_value"][c] == pytest.approx(exact_p, abs=1e-9)
    others = np.arange(8) != c
    assert (res["p_value"][others] == 1).all() and not res["significant"][others].any()
    assert res["significant"][c]
    lo, hi = res["d_accuracy_ci"][c]
    assert lo <= res["d_accuracy"][c] <= hi < 0
    assert 0 < float(res["detectable_d_accuracy"]) < 1  # 40 images detect large changes only


def test_over_budget_filters_carry_no_significance(wide_case) -> None:
    model, x, y, _ = wide_case
    res = filter_impact(model, {"conv": model.conv}, x, y, exact_budget=20.0, seed=1)["conv"]
    exact = res["exact"]
    assert np.isnan(res["p_value"][~exact]).all() and not res["significant"][~exact].any()
    assert np.isnan(res["d_accuracy_ci"][~exact]).all() and np.isfinite(res["p_value"][exact]).all()


def test_shares_of_several_ranks_merge_into_the_single_process_result(wide_case) -> None:
    model, x, y, _ = wide_case
    layers = {"conv": model.conv}
    alone = filter_impact(model, layers, x, y, exact_budget=20.0, seed=1)["conv"]
    parts = [filter_impact(model, layers, x, y, exact_budget=20.0, seed=1, share=(r, 3))["conv"] for r in range(3)]
    merged = finish_impact(merge_impact(parts), y.numpy(), 0.05)
    assert merged["ablated_by_rank"].sum() == alone["exact"].sum() and (merged["ablated_by_rank"] > 0).all()
    for key, value in alone.items():
        np.testing.assert_allclose(merged[key], value, atol=1e-6, err_msg=key)
