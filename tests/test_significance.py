"""Planted-truth tests for tb_convviz.analysis.significance: exact McNemar, Newcombe intervals, BH, power."""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from scipy import stats

from tb_convviz.analysis.significance import (
    benjamini_hochberg,
    detectable_effect,
    examples_needed,
    mcnemar_exact,
    mcnemar_power,
    paired_accuracy_ci,
    recall_delta_ci,
    significance,
)


def exact_mcnemar(b: int, c: int) -> float:
    """min(1, 2·Σ_{i ≤ min(b, c)} C(b + c, i) / 2^(b + c)) in exact rational arithmetic."""
    d = b + c
    tail = Fraction(sum(math.comb(d, i) for i in range(min(b, c) + 1)), 2**d)
    return float(min(Fraction(1), 2 * tail))


def test_mcnemar_equals_the_exact_binomial_sum_for_every_planted_flip_count():
    b, c = np.meshgrid(np.arange(31), np.arange(31), indexing="ij")
    b = np.concatenate([b.ravel(), [300, 250, 1000]])
    c = np.concatenate([c.ravel(), [250, 300, 900]])
    expected = np.array([exact_mcnemar(int(x), int(y)) for x, y in zip(b, c)])
    np.testing.assert_allclose(mcnemar_exact(b, c), expected, rtol=0, atol=1e-9)
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(6, 0) == pytest.approx(2 / 64, abs=1e-15)  # all six one way: 2·2^-6


def test_a_filter_with_no_effect_gets_p_1_and_no_flag_while_a_planted_one_is_flagged():
    # n = 46 probe images, 36 correct clean; filter 0 changes nothing, 1 breaks 20 images,
    # 2 flips 3 each way (Δ = 0), 3 repairs all 10 wrong ones.
    discordant = np.array([[0, 0], [20, 0], [3, 3], [0, 10]])
    out = significance(46, 36, discordant)
    assert set(out) == {"p_value", "p_adjusted", "significant", "d_accuracy_ci", "discordant"}
    assert out["p_value"][0] == 1.0 and out["p_adjusted"][0] == 1.0
    assert out["significant"].tolist() == [False, True, False, True]
    assert out["discordant"].dtype == np.int64 and (out["discordant"] == discordant).all()
    lo, hi = out["d_accuracy_ci"].T
    assert lo[0] < 0 < hi[0] and lo[2] < 0 < hi[2]
    assert hi[1] < 0 and lo[3] > 0  # breaking 20 of 46 images: the whole interval is a loss
    assert lo[1] <= -20 / 46 <= hi[1] and lo[3] <= 10 / 46 <= hi[3]
    np.testing.assert_allclose(out["p_adjusted"], benjamini_hochberg(out["p_value"]))


def test_newcombe_interval_matches_the_published_value():
    # Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", ch. 8 (Cavo et al.
    # 2012), table [[59, 6], [16, 80]]: estimate −0.0621, 95% CI −0.1186 to −0.0046. With rows the
    # ablated and columns the clean outcome: a = 59, c = 6 (wrong → correct), b = 16, d = 80.
    ci = paired_accuracy_ci(161, 59 + 16, 16, 6)
    np.testing.assert_allclose(ci, [-0.1186, -0.0046], atol=5e-5)


@pytest.mark.parametrize(
    "p_both, p_lost, p_gained",
    [(0.6, 0.15, 0.05), (0.7, 0.05, 0.05), (0.85, 0.02, 0.0), (0.3, 0.3, 0.1)],
)
def test_interval_covers_a_planted_population_effect(p_both: float, p_lost: float, p_gained: float):
    rng = np.random.default_rng(8)
    n, probes = 46, 200
    table = rng.multinomial(n, [p_both, p_lost, p_gained, 1 - p_both - p_lost - p_gained], size=probes)
    a, b, c, _ = table.T
    ci = paired_accuracy_ci(n, a + b, b, c)
    truth = p_gained - p_lost
    covered = (ci[:, 0] <= truth) & (truth <= ci[:, 1])
    assert covered.mean() >= 0.9
    assert np.median(ci[:, 1] - ci[:, 0]) < 0.4  # and not by being uninformative


def test_recall_interval_is_the_paired_interval_of_each_class_table():
    support = np.array([5, 12, 0, 29])
    tp = np.array([4, 10, 0, 20])
    lost = np.array([[4, 0, 0, 3], [1, 2, 0, 0]])
    gained = np.array([[0, 2, 0, 1], [1, 0, 0, 9]])
    ci = recall_delta_ci(support, tp, lost, gained)
    assert ci.shape == (2, 4, 2)
    for f in range(2):
        for k in (0, 1, 3):
            np.testing.assert_array_equal(ci[f, k], paired_accuracy_ci(support[k], tp[k], lost[f, k], gained[f, k]))
    assert np.isnan(ci[:, 2]).all()  # a class absent from the probe
    assert recall_delta_ci(support, tp, lost[1], gained[1]).shape == (4, 2)  # one filter on read


def test_benjamini_hochberg_matches_the_direct_definition():
    rng = np.random.default_rng(3)
    p = rng.uniform(size=300) ** 3
    p[[5, 50, 77]] = np.nan
    p[10] = p[11]  # a tie
    got = benjamini_hochberg(p)
    q = p[~np.isnan(p)]
    m = q.size
    expected = np.full(p.shape, np.nan)
    for i, pi in enumerate(p):
        if not np.isnan(pi):
            # adj(p_i) = min over p_j ≥ p_i of p_j · m / #{p_l ≤ p_j}, capped at 1
            expected[i] = min(1.0, min(pj * m / np.sum(q <= pj) for pj in q if pj >= pi))
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    assert np.isnan(got[[5, 50, 77]]).all()
    order = np.argsort(q)
    assert np.all(np.diff(got[~np.isnan(p)][order]) >= 0)
    assert benjamini_hochberg([0.9, 0.95, 1.0]).max() == 1.0


def brute_power(n: int, effect: float, psi: float, alpha: float) -> float:
    """Power of the exact test by enumerating every (lost, gained) outcome of n pairs."""
    p_lost, p_gained = (psi + effect) / 2, (psi - effect) / 2
    total = 0.0
    for x in range(n + 1):
        for y in range(n - x + 1):
            if exact_mcnemar(x, y) <= alpha:
                ways = math.comb(n, x) * math.comb(n - x, y)
                total += ways * p_lost**x * p_gained**y * (1 - psi) ** (n - x - y)
    return total


@pytest.mark.parametrize("n, effect, psi", [(12, 0.2, 0.4), (20, 0.3, None), (25, 0.05, 0.5), (9, 0.0, 0.3)])
def test_power_equals_enumeration_of_every_outcome(n: int, effect: float, psi: float | None):
    expected = brute_power(n, effect, effect if psi is None else psi, 0.05)
    assert mcnemar_power(n, effect, psi) == pytest.approx(expected, abs=1e-12)
    assert mcnemar_power(n, -effect, psi) == pytest.approx(expected, abs=1e-12)  # sign is direction only


def test_five_examples_cannot_show_any_effect_and_six_need_a_huge_one():
    # Even 5 of 5 lost gives p = 2/32 > 0.05; 6 of 6 gives 2/64, and P(all 6 lost) = Δ^6 ≥ 0.8.
    assert math.isnan(detectable_effect(5))
    assert detectable_effect(6) == pytest.approx(0.8 ** (1 / 6), abs=1e-12)
    sizes = np.array([5, 6, 10, 46, 100, 1000])
    effects = detectable_effect(sizes)
    assert effects.shape == sizes.shape and np.all(np.diff(effects[1:]) < 0)
    for size, effect in zip(sizes[1:], effects[1:]):
        assert mcnemar_power(int(size), effect) == pytest.approx(0.8, abs=1e-9)


def test_examples_needed_is_monotone_sane_and_tight():
    effects = [1.0, 0.5, 0.2, 0.1, 0.05, 0.02]
    needed = [examples_needed(e) for e in effects]
    assert needed == sorted(needed) and needed[0] == 6
    assert needed[1] <= 20 and needed[4] >= 100
    for e, n in zip(effects, needed):
        assert mcnemar_power(n, e) >= 0.8 > mcnemar_power(n - 1, e)
        assert detectable_effect(n) <= e < detectable_effect(n - 1) or n == 6


def connor(effect: float, psi: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Connor (1987) normal-approximation sample size for McNemar's test."""
    za, zb = stats.norm.ppf(1 - alpha / 2), stats.norm.ppf(power)
    return (za * math.sqrt(psi) + zb * math.sqrt(psi - effect**2)) ** 2 / effect**2


def test_exact_answers_agree_with_connor_where_the_normal_approximation_holds():
    assert examples_needed(0.05) == pytest.approx(connor(0.05, 0.05), rel=0.05)
    n = round(connor(0.05, 0.2))  # 626 images, 20% of them discordant
    assert detectable_effect(n, discordant_rate=0.2) == pytest.approx(0.05, rel=0.05)


def test_a_known_discordant_rate_makes_small_effects_harder_to_detect():
    one_way = detectable_effect(200)
    mixed = detectable_effect(200, discordant_rate=0.3)
    assert one_way < mixed <= 0.3
    assert mcnemar_power(200, mixed, 0.3) == pytest.approx(0.8, abs=1e-6)
    assert math.isnan(detectable_effect(46, discordant_rate=0.05))  # ~2 discordant images expected


@pytest.mark.parametrize("n", [7, 10, 46, 100])
def test_one_way_changes_need_the_fewest_images_from_seven_on(n: int):
    # No discordance ψ ∈ [Δ, 1] reaches 80% power for a slightly smaller effect than the one-way answer.
    effect = 0.99 * detectable_effect(n)
    assert max(mcnemar_power(n, effect, psi) for psi in np.linspace(effect, 1, 60)) < 0.8


def test_at_six_images_near_total_discordance_beats_one_way_changes():
    # The documented exception: 6 of 6 images changing, (1 + Δ)/2 of them lost, vs Δ^6 one-way.
    assert mcnemar_power(6, 0.93, 1.0) >= 0.8 > mcnemar_power(6, 0.93)


@pytest.mark.parametrize(
    "call, name",
    [
        (lambda: mcnemar_exact(-1, 0), "b"),
        (lambda: mcnemar_exact(0, 1.5), "c"),
        (lambda: paired_accuracy_ci(10, 11, 0, 0), "correct_clean"),
        (lambda: paired_accuracy_ci(10, 5, 6, 0), "b"),
        (lambda: paired_accuracy_ci(10, 5, 0, 6), "c"),
        (lambda: paired_accuracy_ci(10, 5, 0, 0, level=1.0), "level"),
        (lambda: significance(10, 5, [1, 2]), "discordant"),
        (lambda: significance(10, 5, [[1, 2]], alpha=0), "alpha"),
        (lambda: benjamini_hochberg([0.1, 1.5]), "ps"),
        (lambda: examples_needed(0.0), "effect"),
        (lambda: detectable_effect(10, power=0.01), "power"),
        (lambda: detectable_effect(10, discordant_rate=0.0), "discordant_rate"),
        (lambda: mcnemar_power(10, 0.3, 0.2), "discordant_rate"),
    ],
)
def test_bad_arguments_fail_naming_the_argument(call, name: str):
    with pytest.raises(ValueError, match=name):
        call()
