"""The Impact view and the filter detail's perturbation and impact sections, in headless Chromium
against a real TensorBoard process serving logs the real callback wrote."""
from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

from conftest import EPOCHS, IMPACT_PROBE, LAST, RUN_1D, RUN_IMPACT, RUNS_2D, WIDE_FILTERS, answer, open_impact


def values(rows) -> list[float]:
    return [float(v) for v in rows.evaluate_all("rows => rows.map(r => r.dataset.value)")]


def test_impact_table_sorts_flags_and_opens_the_filter(frame, tensorboard_url):
    rows = open_impact(frame, RUN_IMPACT, "0")
    assert rows.count() == 8  # one per filter
    view = frame.locator("[data-testid=impact-view]")
    assert view.get_attribute("data-sort") == "d_accuracy"
    by_accuracy = values(rows)
    assert by_accuracy == sorted(by_accuracy)  # the most accuracy lost first
    assert min(by_accuracy) < 0  # some filter matters on this probe

    data = answer(tensorboard_url, f"impact?run={RUN_IMPACT}&layer=0&step={LAST}")["arrays"]
    concentrated = sum(1 for v in data["topk_flag"]["values"] if v)
    assert frame.locator("[data-testid=impact-flag][data-flag=class]").count() == concentrated
    # The summary counts each yes/no column's filters: here the one-class top-k flag.
    assert frame.locator("[data-testid=flag-count][data-name=topk_flag]").text_content() == f"{concentrated} of 8"
    responses = answer(tensorboard_url, f"perturbation?run={RUN_IMPACT}&layer=0&step={LAST}")["arrays"]
    flagged = sum(1 for v in responses["cf/no_red/flag"]["values"] if v)
    assert frame.locator("[data-testid=impact-flag][data-flag=counterfactual]").count() == flagged
    headers = frame.locator("[data-testid=impact-sort]").evaluate_all("bs => bs.map(b => b.dataset.metric)")
    for metric in ("d_accuracy", "d_loss", "flips", "taylor_d_loss", "class_selectivity", "osi", "stability", "fgsm", "cf/no_red"):
        assert metric in headers

    sort = frame.locator("[data-testid=impact-sort][data-metric=d_accuracy]")
    sort.click()  # again: reversed
    frame.locator('[data-testid=impact-view][data-reverse="true"]').wait_for()
    assert values(rows) == sorted(by_accuracy, reverse=True)
    frame.locator("[data-testid=impact-sort][data-metric=d_loss]").click()
    frame.locator('[data-testid=impact-view][data-sort="d_loss"][data-reverse="false"]').wait_for()
    by_loss = values(rows)
    assert by_loss == sorted(by_loss, reverse=True)
    assert sorted(by_loss) == sorted(data["d_loss"]["values"])

    first = rows.first.get_attribute("data-filter")
    rows.first.click()
    panel = frame.locator(f'[data-testid=detail-panel][data-filter="{first}"]')
    panel.wait_for()
    assert panel.locator("[data-testid=polar-chart] path.cvz-chart-line").count() == 1
    assert panel.locator("[data-testid=polar-chart] circle.cvz-chart-dot").count() == 12  # one per grating angle
    assert panel.locator("[data-testid=rotation-polar]").count() == 1
    examples = panel.locator("[data-testid=top-example]")
    assert examples.count() == 5
    labels = data["topk_label"]["values"][int(first) * 5 : int(first) * 5 + 5]
    assert panel.locator("[data-testid=top-examples-classes]").text_content().endswith(classes_in_words(labels) + ".")
    top = data["topk_index"]["values"][int(first) * 5 : int(first) * 5 + 5]
    assert [int(i) for i in examples.evaluate_all("fs => fs.map(f => f.dataset.index)")] == [int(i) for i in top]
    assert all(0 <= i < IMPACT_PROBE for i in top)
    # The layer's maps are kept for probe images 0-3: only those examples get the overlay.
    overlays = examples.evaluate_all("fs => fs.map(f => f.dataset.overlay)")
    assert overlays == ["true" if i < 4 else "false" for i in top]
    assert examples.locator("canvas").count() == 5
    # Its value in every impact column as declared: Δaccuracy with its interval, flips as a count.
    accuracy = panel.locator("[data-testid=column-d_accuracy]").text_content()
    assert re.fullmatch(r"[+-]?\d+(\.\d+)?% \[[+-]?\d+(\.\d+)?%, [+-]?\d+(\.\d+)?%\] · 1/8", accuracy), accuracy  # the first row
    flips = data["flips"]["values"]
    rank = 1 + sum(1 for v in flips if v > flips[int(first)])  # most flips first; equal counts share a rank
    assert panel.locator("[data-testid=column-flips]").text_content() == f"{int(flips[int(first)])} · {rank}/8"
    assert panel.locator("dt", has_text="Δaccuracy").first.get_attribute("title").startswith("Change of probe accuracy")
    assert panel.locator("[data-testid=recall-bars] .cvz-bars-row").count() == 3  # one per class
    assert panel.locator("[data-testid=counterfactual-row]").count() == 1
    assert panel.locator("[data-testid=noise-chart] circle").count() >= 4
    # The history charts the column the table sorts by (Δloss), and any other the select picks.
    chart = panel.locator("[data-testid=history-chart]")
    assert chart.get_attribute("data-column") == "d_loss"
    assert chart.locator("circle").count() == EPOCHS
    options = panel.locator("[data-testid=history-column] option").evaluate_all("os => os.map(o => o.value)")
    assert {"d_accuracy", "d_loss", "osi", "cf/no_red", "l2"} <= set(options)
    panel.locator("[data-testid=history-column]").select_option("d_accuracy")
    panel.locator("[data-testid=history-chart][data-column=d_accuracy] [data-testid=chart-band]").wait_for()
    # Opened from the Impact view, the impact comes before the weights.
    order = panel.locator("section[data-testid]").evaluate_all("ss => ss.map(s => s.dataset.testid)")
    assert order.index("detail-impact") < order.index("detail-slices")

    # The step slider moves the table and the open detail to another epoch.
    frame.locator("[data-testid=epoch-slider]").fill("2")
    frame.locator('[data-testid=impact-view][data-step="2"][data-loading=false]').wait_for()
    frame.locator(f'[data-testid=detail-panel][data-filter="{first}"][data-step="2"]').wait_for()
    assert rows.count() == 8


def classes_in_words(labels: list) -> str:
    """What the top examples' text must say: a class only when it is the majority."""
    (label, count), = Counter(int(v) for v in labels).most_common(1)
    if count == len(labels):
        return f"all {count} are class {label}"
    if 2 * count > len(labels):
        return f"{count} of {len(labels)} are class {label}"
    return f"{len(set(labels))} classes, none a majority"


def test_top_examples_name_a_class_only_when_it_is_the_majority(frame, tensorboard_url):
    rows = open_impact(frame, RUN_IMPACT, "2")
    labels = answer(tensorboard_url, f"impact?run={RUN_IMPACT}&layer=2&step={LAST}")["arrays"]["topk_label"]["values"]
    said = set()
    for f in range(rows.count()):
        frame.locator(f"[data-testid=impact-row][data-filter='{f}']").click()
        text = frame.locator(f"[data-testid=detail-panel][data-filter='{f}'] [data-testid=top-examples-classes]")
        expected = classes_in_words(labels[f * 5 : f * 5 + 5])
        assert text.text_content().endswith(f": {expected}.")
        said.add(expected.split(" ")[1])
    assert "classes," in said or "of" in said, "this probe should give some filter no unanimous top five"


def test_percentages_never_use_exponent_notation(frame):
    open_impact(frame, RUN_IMPACT, "0")
    frame.locator("[data-testid=impact-row]").first.click()
    frame.locator("[data-testid=detail-panel] [data-testid=recall-bars]").wait_for()
    texts = frame.locator("[data-testid=impact-view] td, [data-testid=impact-summary] dd, [data-testid=detail-panel] dd, "
                          "[data-testid=detail-panel] .cvz-bars-value").all_text_contents()
    percents = [t for t in texts if "%" in t]
    assert len(percents) > 8
    for text in percents:
        # a value, with its interval where it has one, or a lower bound ("≥ 30.9%": the detectable change);
        # a counterfactual's change with its test's q
        pct = r"[+-]?(<0\.01|\d+(\.\d+)?)%"
        assert re.fullmatch(rf"(≥ )?{pct}( \[{pct}, {pct}\])?( · \d+/\d+)?( · q (< 0\.001|[\d.]+))?", text), text


def test_run_without_impact_says_how_to_turn_it_on(frame, tensorboard_url):
    rows = open_impact(frame, RUNS_2D[0], "3")
    message = frame.locator("[data-testid=impact-message]")
    assert message.count() == 1
    assert message.text_content().startswith("Impact is off for this run: ConvViz(..., impact=True) with probe labels")
    # Its perturbation responses (on by default) still fill the table.
    assert rows.count() == 16
    headers = frame.locator("[data-testid=impact-sort]").evaluate_all("bs => bs.map(b => b.dataset.metric)")
    assert "d_accuracy" not in headers and "osi" in headers and "l2" in headers
    # Sorted by the first column (in group order) that has a better end: here noise stability.
    declared = {c["name"]: c for c in answer(tensorboard_url, f"table?run={RUNS_2D[0]}&layer=3&step={LAST}")["columns"]}
    first_better = next(name for name in headers if declared[name]["better"])
    assert first_better == "stability"
    assert frame.locator("[data-testid=impact-view]").get_attribute("data-sort") == first_better

    rows.first.click()
    panel = frame.locator("[data-testid=detail-panel]")
    panel.locator("[data-testid=polar-chart]").wait_for()
    assert "impact=True" in panel.locator("[data-testid=detail-impact-message]").text_content()
    assert panel.locator("[data-testid=top-example]").count() == 0


def test_conv1d_responses_are_shift_and_reversal(frame, tensorboard_url):
    rows = open_impact(frame, RUN_1D, "0")
    assert rows.count() == 6
    headers = frame.locator("[data-testid=impact-sort]").evaluate_all("bs => bs.map(b => b.dataset.metric)")
    assert "reversal" in headers and "shift" in headers and "osi" not in headers
    # The Shift column: each filter's mean shift cosine, least shift-following first.
    frame.locator("[data-testid=impact-sort][data-metric=reversal]").click()
    frame.locator('[data-testid=impact-view][data-sort="reversal"]').wait_for()
    frame.locator("[data-testid=impact-sort][data-metric=shift]").click()
    frame.locator('[data-testid=impact-view][data-sort="shift"][data-reverse="false"]').wait_for()
    shift = answer(tensorboard_url, f"perturbation?run={RUN_1D}&layer=0&step={LAST}")["arrays"]["shift"]
    per = shift["shape"][1]
    means = {str(f): sum(shift["values"][f * per : (f + 1) * per]) / per for f in range(6)}
    shown = [(r.get_attribute("data-filter"), float(r.get_attribute("data-value"))) for r in rows.all()]
    assert [f for f, _ in shown] == sorted(means, key=lambda f: (means[f], int(f)))
    assert all(abs(v - means[f]) < 1e-6 for f, v in shown)
    rows.first.click()
    panel = frame.locator("[data-testid=detail-panel]")
    bars = panel.locator("[data-testid=symmetry-bars] .cvz-bars-row")
    bars.first.wait_for()
    assert bars.count() == 4  # three shifts and the reversal
    assert panel.locator("[data-testid=polar-chart]").count() == 0
    # The activation traces say what their lines are.
    legend = panel.locator("[data-testid=detail-maps] [data-testid=signal-legend]")
    assert "filter's activation (left axis" in legend.text_content()
    assert "probe input" in legend.text_content()
    assert panel.locator("[data-testid=detail-maps] [data-testid=signal-trace]").count() == 4


def test_a_wide_layer_shows_its_first_rows_says_which_step_and_exports_all(tab, frame, tensorboard_url):
    rows = open_impact(frame, RUN_1D, "2")
    more = frame.locator("[data-testid=impact-show-all]")
    assert rows.count() == 256 and more.is_visible()
    assert more.text_content().startswith(f"Showing the first 256 of {WIDE_FILTERS} filters")
    # The layers take turns at responses: "2" was last recorded one step before, and the view says so.
    assert answer(tensorboard_url, f"perturbation?run={RUN_1D}&layer=2&step={LAST}")["record_step"] == LAST - 1
    notes = frame.locator("[data-testid=impact-message]").all_text_contents()  # impact is off here: that, and the turn
    assert any(n.startswith(f"Perturbation responses from step {LAST - 1}, this layer's last before step {LAST}") for n in notes), notes
    # The CSV holds every filter, not only the rows drawn.
    with tab.page.expect_download() as download:
        frame.locator("[data-testid=impact-view] [data-testid=download-csv]").click()
    table = list(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
    assert len(table) == 1 + WIDE_FILTERS and table[0][0] == "filter"
    assert [int(r[0]) for r in table[1:]] == list(range(WIDE_FILTERS))  # by index, as logs.to_csv
    # A click on a row keeps the table (and its length); "show all" draws the rest.
    first = rows.first.get_attribute("data-filter")
    rows.first.click()
    frame.locator(f'[data-testid=impact-row][data-filter="{first}"][aria-selected=true]').wait_for()
    panel = frame.locator(f'[data-testid=detail-panel][data-filter="{first}"]')
    panel.wait_for()
    assert f"from step {LAST - 1}" in panel.locator("[data-testid=detail-responses-step]").text_content()
    assert rows.count() == 256
    more.click()
    frame.locator("[data-testid=impact-row]").nth(WIDE_FILTERS - 1).wait_for()
    assert rows.count() == WIDE_FILTERS and more.is_hidden()


def test_a_filter_reading_hundreds_of_channels_draws_its_slices_on_one_canvas(frame):
    rows = open_impact(frame, RUN_1D, "4")
    rows.first.click()
    panel = frame.locator(f'[data-testid=detail-panel][data-filter="{rows.first.get_attribute("data-filter")}"]')
    mosaic = panel.locator("[data-testid=detail-slices] [data-testid=slice-mosaic]")
    mosaic.wait_for()
    assert mosaic.count() == 1 and panel.locator("[data-testid=detail-slices] .cvz-slice").count() == 0
    box = mosaic.bounding_box()
    assert box is not None and box["width"] > 100 and box["height"] > 10
    mosaic.hover(position={"x": 3, "y": 3})
    tooltip = panel.locator("[data-testid=detail-slices] [data-testid=slice-mosaic-tooltip]")
    tooltip.wait_for()
    assert "Input channel 0" in tooltip.text_content()
