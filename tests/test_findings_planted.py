"""Findings on planted truths in real logs, the kinds tests/test_findings.py leaves to unit tests:
a saboteur filter whose removal fixes every error is the one `harmful` finding and the one filter
that `fires_on_errors`; a layer of pixel-texture detectors gets `texture` and a layer of smooth
edge detectors does not; a layer frozen after an early epoch is `settled` and one still training
is not. Each run is written by the real ConvViz and read back through `load()`; each planted
structure, removed (`broken=True`), makes its test's claim false."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from planted_findings import of_kind
from planted_more_findings import (FREEZE_AFTER, SABOTEUR, SHAPE_LAYER, TEXTURE_LAYER, VICTIMS, WRONG_CLASS,
                                   write_sabotaged_run, write_settled_run, write_texture_run)

from tb_convviz import load
from tb_convviz.schema import format as fmt


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("planted")
    write_sabotaged_run(root / "sabotaged")
    write_texture_run(root / "texture")
    write_settled_run(root / "settled")
    return load(str(root))


def test_the_saboteur_whose_removal_fixes_every_error_is_the_one_harmful_finding(logs):
    found = logs.findings("sabotaged")
    harmful = of_kind(found, "harmful")
    assert [(f["layer"], f["filters"]) for f in harmful] == [("conv", [SABOTEUR])]
    evidence = harmful[0]["evidence"]
    probe = evidence["probe"]
    assert (evidence["wrong_to_correct"], evidence["correct_to_wrong"]) == (VICTIMS, 0)
    assert evidence["d_accuracy"] == pytest.approx(VICTIMS / probe)
    lo, hi = evidence["d_accuracy_ci"]
    assert 0 < lo < evidence["d_accuracy"] < hi
    assert evidence["p_value"] == pytest.approx(2 * 0.5**VICTIMS)  # exact McNemar: 10 one-way flips
    assert evidence["p_adjusted_run"] <= 0.05
    # the classes it gives back are the victims' own, never the one it pushes them to
    assert set(harmful[0]["classes"]) == {0, 1, 2} and WRONG_CLASS not in harmful[0]["classes"]
    assert SABOTEUR not in {f for n in of_kind(found, "needed") for f in n["filters"]}


def test_the_saboteur_fires_on_exactly_the_errors_and_no_other_filter_does(logs):
    found = of_kind(logs.findings("sabotaged"), "fires_on_errors")
    assert [(f["layer"], f["filters"]) for f in found] == [("conv", [SABOTEUR])]
    evidence = found[0]["evidence"]
    assert evidence["errors"] == VICTIMS and evidence["auc"] == 1.0
    assert evidence["act_on_errors"] > 10 * evidence["act_on_correct"]
    # its p is the one-sided rank test of VICTIMS errors, all above every correct image
    correct = evidence["correct"]
    expected = stats.mannwhitneyu(np.arange(VICTIMS) + correct, np.arange(correct), alternative="greater",
                                  method="asymptotic").pvalue
    assert evidence["p_value"] == pytest.approx(expected, rel=1e-6)
    assert evidence["p_value"] <= evidence["p_adjusted_run"] <= 0.05


def test_pixel_texture_detectors_lean_on_texture_and_smooth_edge_detectors_do_not(logs):
    found = of_kind(logs.findings("texture"), "texture")
    assert [f["layer"] for f in found] == [TEXTURE_LAYER]
    evidence = found[0]["evidence"]
    assert evidence["median_index"] < -0.9 and evidence["filters"] == 8
    assert evidence["p_value"] == pytest.approx(0.5**8)  # exact Wilcoxon: all 8 indices below 0
    shape = logs.perturbation("texture", SHAPE_LAYER, 1)[fmt.SHAPE_TEXTURE_INDEX]
    assert np.median(shape) > 0.5  # the edge detectors lean on shape: no finding, and for a reason


def test_a_layer_frozen_after_an_early_epoch_is_settled_and_one_still_training_is_not(logs):
    found = of_kind(logs.findings("settled"), "settled")
    assert [(f["layer"], f["evidence"]["from_step"]) for f in found] == [("early", FREEZE_AFTER)]
    evidence = found[0]["evidence"]
    lo, hi = evidence["cka_ci"]
    assert lo <= evidence["cka"] <= hi and lo >= 0.99
    assert evidence["steps"] == list(range(6)) and len(evidence["curve"]) == 6


@pytest.mark.parametrize("write, run, kind", [(write_sabotaged_run, "sabotaged", "harmful"),
                                              (write_sabotaged_run, "sabotaged", "fires_on_errors"),
                                              (write_texture_run, "texture", "texture"),
                                              (write_settled_run, "settled", "settled")])
def test_without_the_planted_structure_nothing_of_its_kind_is_found(tmp_path, write, run, kind):
    write(tmp_path / run, broken=True)
    assert not of_kind(load(str(tmp_path)).findings(run), kind)
