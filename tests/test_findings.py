"""Findings on planted truths, read back through `load()`: the filter that alone carries a class is
the top `needed` finding and names it, the marker detector is the top `shortcut`, the zeroed
filter is `dead`, the copy is a `duplicate` of the right filter, a 5×5 layer fitted to a 3×3
bank gets `kernel_size`; a 6-image probe finds nothing `needed` and says why; random networks
find no tested finding beyond the stated α."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats

from models import two_conv_net
from planted_findings import (COPY, DEAD, LAYER, MARKER, MARKER_CLASS, NEEDED, NEEDED_CLASS, of_kind,
                              write_kernel_size_run, write_planted_run)
from training import one_thread
from tensorboard.backend.application import TensorBoardWSGI
from tensorboard.plugins import base_plugin
from werkzeug.test import Client

from tb_convviz import ConvViz, load
from tb_convviz.analysis import findings as rules
from tb_convviz.plugin.plugin import ConvVizPlugin

FIELDS = {"kind", "layer", "filters", "classes", "summary", "evidence", "rule", "severity", "view", "certainty"}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("findings")
    write_planted_run(root / "planted")
    write_planted_run(root / "tiny", probe_images=6)
    write_kernel_size_run(root / "k5")
    return load(str(root))


def test_every_finding_has_its_fields_and_the_list_is_ranked_by_severity(logs):
    found = logs.findings("planted")
    assert found and all(set(f) >= FIELDS for f in found)
    assert [f["severity"] for f in found] == sorted((f["severity"] for f in found), reverse=True)
    bands = [k.severity for k in rules.KINDS]
    assert bands == sorted(bands, reverse=True) and max(np.diff(bands)) < -rules.STRENGTH_SPAN
    for f in found:
        declared = rules.KIND_BY_NAME[f["kind"]]
        assert f["rule"] == declared.rule and declared.severity <= f["severity"] <= declared.severity + rules.STRENGTH_SPAN
        assert f["view"]["view"] == declared.mode and f["view"]["step"] == 2 and f["view"]["layer"] == f["layer"]
    assert logs.findings("planted", step=2) == found  # None is the last step


def test_the_route_answers_what_logs_findings_says_and_bad_parameters_are_4xx(logs):
    client = Client(TensorBoardWSGI([ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=logs.logdir))]))
    answer = client.get("/data/plugin/convviz/findings?run=planted&step=1")
    assert answer.status_code == 200
    body = answer.get_json()
    assert body["step"] == 1 and body["findings"] == logs.findings_report("planted", 1)["findings"]
    assert [k["name"] for k in body["kinds"]] == [k.name for k in rules.KINDS]
    assert client.get("/data/plugin/convviz/findings?run=planted").get_json()["step"] == 2
    for query, code in (("run=nope", 404), ("run=planted&step=x", 400), ("run=planted&step=99", 404), ("", 400)):
        bad = client.get(f"/data/plugin/convviz/findings?{query}")
        assert bad.status_code == code and "error" in bad.get_json(), query


def test_the_filter_that_alone_carries_a_class_is_the_top_needed_finding_and_names_it(logs):
    needed = of_kind(logs.findings("planted"), "needed")
    assert needed, "the planted carrier was not found"
    top = needed[0]
    assert (top["layer"], top["filters"], top["classes"][0]) == (LAYER, [NEEDED], NEEDED_CLASS)
    evidence = top["evidence"]
    assert evidence["d_accuracy"] == pytest.approx(-10 / 46)  # its 10 class-2 probe images all lost
    lo, hi = evidence["d_accuracy_ci"]
    assert lo < evidence["d_accuracy"] < hi < 0
    assert evidence["p_adjusted_run"] <= 0.05 and evidence["classes"][0]["d_recall"] == -1.0
    assert all(f["filters"] != [COPY[0]] and f["filters"] != [COPY[1]] for f in needed)  # each copy covers for the other
    fragile = of_kind(logs.findings("planted"), "fragile_class")
    assert [f["classes"] for f in fragile] == [[NEEDED_CLASS]] and fragile[0]["filters"] == [NEEDED]


def test_the_marker_detector_is_the_top_shortcut_and_pushes_predictions_towards_the_marked_class(logs):
    shortcuts = of_kind(logs.findings("planted"), "shortcut")
    top = shortcuts[0]
    assert (top["layer"], top["filters"], top["classes"]) == (LAYER, [MARKER], [MARKER_CLASS])
    assert top["evidence"]["predictions_moved"] == 6  # the six marked victims go back to their own class
    assert set(top["evidence"]["edits"]) == {"remove marker", "add marker"}
    assert top["view"]["sort"].endswith(max(top["evidence"]["edits"], key=lambda e: top["evidence"]["edits"][e]["z"]))
    assert DEAD not in {f for s in shortcuts for f in s["filters"]}
    # Its flags rest on the paired test over the probe images, and the finding says so.
    assert all(e["q"] <= 0.05 for e in top["evidence"]["edits"].values())
    assert top["certainty"].startswith("flagged by a paired t test over the probe images")


def test_the_carrier_s_one_class_top_examples_make_it_a_class_detector(logs):
    detectors = of_kind(logs.findings("planted"), "class_detector")
    assert [(d["filters"], d["classes"]) for d in detectors] == [([NEEDED], [NEEDED_CLASS])]
    assert detectors[0]["evidence"]["concentration"] == 1.0 and detectors[0]["evidence"]["d_recall"] == -1.0


def test_the_zeroed_filter_is_dead_and_the_copy_is_a_duplicate_of_the_right_filter(logs):
    found = logs.findings("planted")
    dead = of_kind(found, "dead")
    assert [d["filters"] for d in dead] == [[DEAD]]
    # 4 input channels × 3 × 3 + a bias; the head is not a conv, so no next layer is named
    assert dead[0]["evidence"]["params"] == 37 and dead[0]["evidence"]["next_layer"] is None
    assert dead[0]["evidence"]["macs"] == 36 * 12 * 12
    duplicates = of_kind(found, "duplicate")
    assert [d["filters"] for d in duplicates] == [list(COPY)]
    assert duplicates[0]["evidence"]["cosine"] == pytest.approx(1.0, abs=1e-6)


def test_a_5x5_layer_fitted_to_a_3x3_bank_gets_a_kernel_size_finding_naming_the_next_layer_savings(logs):
    found = logs.findings("k5")
    sizes = of_kind(found, "kernel_size")
    assert [(f["layer"], f["evidence"]["smaller"]) for f in sizes] == [("wide", [3, 3])]
    assert sizes[0]["evidence"]["energy_kept"] >= 0.95
    report = logs.findings_report("k5")
    assert {u["kind"] for u in report["unavailable"]} >= {"needed", "shortcut"}
    assert all(u["enable"] for u in report["unavailable"])


def test_a_six_image_probe_finds_nothing_needed_and_says_why(logs):
    report = logs.findings_report("tiny")
    assert not of_kind(report["findings"], "needed") and not of_kind(report["findings"], "fragile_class")
    why = {u["kind"]: u["reason"] for u in report["unavailable"]}
    assert "6 labelled images" in why["needed"] and "96%" in why["needed"]
    assert {u["kind"]: u["enable"] for u in report["unavailable"]}["needed"].startswith("a labelled probe of ≥ 78 images")
    assert report["probe"]["n"] == 6
    # what the probe can still show is shown: the weights do not need a large probe
    assert of_kind(report["findings"], "dead") and of_kind(report["findings"], "duplicate")


def test_a_probe_too_small_is_said_from_the_test_s_own_power():
    assert rules.probe_too_small(6, 0.05) is not None
    assert rules.probe_too_small(5, 0.05) is not None and "no Δaccuracy at all" in rules.probe_too_small(5, 0.05)
    assert rules.probe_too_small(46, 0.05) is None


SEEDS = 10
TESTED = [k.name for k in rules.KINDS if k.tested]


def test_random_networks_find_no_tested_finding_beyond_alpha(tmp_path: Path):
    """Random weights and labels unrelated to the images: every tested kind's findings are false.
    Per kind, the share of networks with any finding must be what α allows: at most the count a
    Binomial(SEEDS, α) exceeds with probability 0.001; and no weight finding appears."""
    g = torch.Generator().manual_seed(11)
    x = torch.randn(60, 3, 10, 10, generator=g)
    y = torch.randint(0, 3, (60,), generator=g)
    with one_thread():
        for seed in range(SEEDS):
            torch.manual_seed(100 + seed)
            model = two_conv_net((8, 8), classes=3, batchnorm=False)
            with torch.no_grad():
                model[-1].weight *= 30  # logits far apart image to image: ablations flip many predictions
            with ConvViz(str(tmp_path / f"seed{seed}"), probe=(x, y), impact={"exact": "all"}, background=False,
                         counterfactuals={}) as viz:
                viz.log(model, 0)
    logs = load(str(tmp_path))
    hits = {kind: 0 for kind in TESTED}
    for seed in range(SEEDS):
        found = logs.findings(f"seed{seed}")
        for kind in {f["kind"] for f in found} & set(TESTED):
            hits[kind] += 1
        assert not {f["kind"] for f in found} & {"dead", "duplicate", "kernel_size"}
    allowed = int(stats.binom.ppf(0.999, SEEDS, 0.05))
    assert all(count <= allowed for count in hits.values()), (hits, allowed)


def test_class_effects_are_sparse_and_match_the_dense_per_class_table():
    from tb_convviz.analysis.impact import per_class_deltas

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 5, 40)
    clean = np.where(rng.random(40) < 0.7, labels, rng.integers(0, 5, 40))
    ff, fi = rng.integers(0, 6, 30), rng.integers(0, 40, 30)
    keep = np.unique(ff * 100 + fi, return_index=True)[1]
    ff, fi, fp = ff[keep], fi[keep], rng.integers(0, 5, len(keep))
    e = rules.class_effects(labels, clean, ff, fi, fp)
    dense = per_class_deltas(labels, clean, ff, fi, fp, 6)
    got = np.zeros((6, 5))
    got[e.filter, e.cls] = e.d_recall()
    np.testing.assert_allclose(got, dense["d_recall"])
    assert len(e.filter) <= len(ff) and np.all((e.p_specific() >= 0) & (e.p_specific() <= 1))


def test_a_filter_far_more_active_on_errors_fires_on_errors_and_its_neighbours_do_not():
    from tb_convviz.analysis.impact import errors_rank_test

    rng = np.random.default_rng(1)
    wrong = np.arange(32) % 4 == 0  # 8 errors, 24 correct
    scores = np.abs(rng.normal(size=(32, 6)))
    scores[wrong, 2] += 3.0  # filter 2 fires on the errors
    auc, p = errors_rank_test(torch.as_tensor(scores), torch.as_tensor(wrong))
    a = {"errors_auc": auc, "errors_p": p, "act_on_errors": scores[wrong].mean(0), "act_on_correct": scores[~wrong].mean(0)}
    found = rules.fires_on_errors({"c": a}, {"c": (8, 24)}, 0.05, 7, "sort")
    assert [(f["layer"], f["filters"]) for f in found] == [("c", [2])]
    assert found[0]["evidence"]["auc"] > 0.95 and found[0]["evidence"]["errors"] == 8
    expected = stats.mannwhitneyu(scores[wrong, 2], scores[~wrong, 2], alternative="greater", method="asymptotic")
    assert found[0]["evidence"]["p_value"] == pytest.approx(expected.pvalue, rel=1e-5)


def test_the_rank_test_of_activity_on_errors_is_mann_whitney_with_ties():
    """Rectified activations tie at 0 often: the ranks, AUC and p are scipy's, ties included; a
    filter silent on every image has no evidence (p = 1, AUC 0.5); no errors, no test."""
    from tb_convviz.analysis.impact import errors_rank_test

    rng = np.random.default_rng(3)
    scores = np.maximum(rng.normal(size=(50, 5)), 0).round(1)
    scores[:, 4] = 0.0
    wrong = rng.random(50) < 0.3
    auc, p = errors_rank_test(torch.as_tensor(scores), torch.as_tensor(wrong))
    expected = stats.mannwhitneyu(scores[wrong], scores[~wrong], alternative="greater", axis=0, method="asymptotic")
    np.testing.assert_allclose(p[:4], expected.pvalue[:4], rtol=1e-5)
    np.testing.assert_allclose(auc, expected.statistic / (wrong.sum() * (~wrong).sum()), rtol=1e-6)
    assert (p[4], auc[4]) == (1.0, 0.5)
    assert np.isnan(errors_rank_test(torch.as_tensor(scores), torch.zeros(50, dtype=torch.bool))[1]).all()


def test_a_texture_layer_and_a_settled_layer_are_found_and_their_opposites_are_not():
    rng = np.random.default_rng(2)
    texture = rules.texture_findings({"tex": -0.5 + 0.1 * rng.normal(size=20), "shape": 0.4 + 0.1 * rng.normal(size=20)},
                                     0.05, 3, "sort")
    assert [f["layer"] for f in texture] == ["tex"]
    steps = [0, 1, 2, 3, 4, 5]
    early = np.array([0.5, 0.995, 0.996, 0.998, 0.999, 1.0])
    late = np.array([0.2, 0.4, 0.6, 0.8, 0.995, 1.0])
    settled = rules.settled_findings(steps, {"early": (early, early - 0.01, early + 0.01), "late": (late, late, late)}, 5)
    assert [(f["layer"], f["evidence"]["from_step"]) for f in settled] == [("early", 1)]


def test_an_outlier_of_noise_stability_is_unstable():
    stability = np.full((12, 4), 0.9) + np.linspace(0, 0.01, 12)[:, None]
    stability[5] = 0.2
    found = rules.unstable_findings("c", stability, None, 1, ("stability", "fgsm"))
    assert [f["filters"] for f in found] == [[5]] and found[0]["evidence"]["measure"] == "noise"


def test_pruning_savings_count_the_layer_and_the_inputs_of_the_next_one():
    nxt = {"name": "b", "filters": 16, "groups": 2, "kernel_size": [3, 3], "positions": 36}
    saved = rules.pruning_savings(8, 4, [3, 3], 144, nxt, 2)
    assert saved == {"params": 2 * (4 * 9 + 1), "macs": 2 * 4 * 9 * 144, "next_layer": "b",
                     "next_params": 2 * 8 * 9, "next_macs": 2 * 8 * 9 * 36}


def _readme_row(kind: str) -> str:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    return next(line for line in readme.splitlines() if line.startswith(f"| `{kind}` |"))


def test_the_shortcut_and_error_rules_say_what_the_flags_and_tests_compute_and_the_readme_agrees():
    """The shortcut rule is the counterfactual flag (a paired test over the probe images, BH q, a
    least change and the layer's outlier rule), fires_on_errors the rank test over every probe
    image: the declared rule and README's Findings table both name each threshold."""
    from tb_convviz.analysis.perturbation.counterfactual import FLAG_Q, MIN_CHANGE, ROBUST_Z_FLAG

    shortcut = (rules.KIND_BY_NAME["shortcut"].rule, _readme_row("shortcut"))
    for text in shortcut:
        assert "paired t test over the probe images" in text and f"q ≤ {FLAG_Q:g}" in text
        assert f"≥ {MIN_CHANGE:.0%}" in text and f"z > {ROBUST_Z_FLAG}" in text
    errors = (rules.KIND_BY_NAME["fires_on_errors"].rule, _readme_row("fires_on_errors"))
    for text in errors:
        assert "Mann–Whitney over" in text or "Mann–Whitney test over" in text
        assert "probe image" in text and "profile" not in text and f"AUC ≥ {rules.ERROR_AUC}" in text
