"""The CONVVIZ tab in headless Chromium against a real TensorBoard process."""
from __future__ import annotations

import math
import re
from urllib.parse import urlencode

import numpy as np
from conftest import EPOCHS, RUN_1D, RUNS, RUNS_2D, XSS_RUN, choose, grid_shows
from tbserver import get_json, tensorboard
from wire import decode_wire


def test_run_names_are_text_and_grid_counts_the_layers_filters(frame):
    picker = frame.locator("[data-testid=run-picker]")
    names = picker.locator("option").all_text_contents()
    assert sorted(names) == sorted(RUNS)
    assert picker.input_value() == XSS_RUN  # '<' sorts first: the hostile name is the one shown
    assert frame.locator("img").count() == 0
    picker.select_option(RUNS_2D[0])
    picker.select_option(XSS_RUN)
    frame.locator("[data-testid=layer-picker]").select_option("0")
    grid_shows(frame, XSS_RUN, "0")
    assert frame.locator("[data-testid=filter-grid]").get_attribute("data-filter-count") == "8"

    frame.locator("[data-testid=layer-picker]").select_option("3")
    grid = grid_shows(frame, XSS_RUN, "3")
    assert grid.get_attribute("data-filter-count") == "16"
    assert frame.locator("[data-testid=layer-title]").text_content() == "Layer 3"

    assert "· kernel 3×3 ·" in frame.locator("[data-testid=layer-view] .cvz-card-sub").text_content()

    picker.select_option(RUN_1D)
    grid = grid_shows(frame, RUN_1D, "0")
    assert grid.get_attribute("data-filter-count") == "6"
    assert "· kernel 5 ·" in frame.locator("[data-testid=layer-view] .cvz-card-sub").text_content()


def layer_stats(url: str, run: str, layer: str, step: int) -> dict:
    """The layer route's per-filter statistics (wire arrays) as lists, NaN as None."""
    stats = get_json(f"{url}/data/plugin/convviz/layer?{urlencode({'run': run, 'layer': layer, 'step': step})}")["stats"]
    return {name: [None if np.isnan(v) else float(v) for v in decode_wire(w)] for name, w in stats.items()}


def most_first(values: list) -> list[str]:
    """Filter indices by value, largest first, missing last, ties by index (the dashboard's order)."""
    key = [(-v if v is not None and math.isfinite(v) else math.inf, i) for i, v in enumerate(values)]
    return [str(i) for _, i in sorted(key)]


def label_bands(frame, testid: str) -> list[list[int]]:
    """The pixels of the index label under each cell of a grid, as drawn on its canvas."""
    return frame.locator(f"[data-testid={testid}]").evaluate(
        """c => {
          const d = c.dataset, n = +d.filterCount, cols = +d.cols, px = +d.pitchX, py = +d.pitchY;
          const dpr = c.width / parseFloat(c.style.width), ctx = c.getContext("2d");
          const bands = [];
          for (let k = 0; k < n; k++) {
            const x = (k % cols) * px, y = Math.floor(k / cols) * py + +d.cellHeight;
            const band = ctx.getImageData(Math.round(x * dpr), Math.round(y * dpr), Math.round(+d.cellWidth * dpr), Math.round(+d.labelHeight * dpr));
            bands.push(Array.from(band.data));
          }
          return bands;
        }"""
    )


def test_grid_cells_carry_their_filter_index(frame):
    grid = choose(frame, RUNS_2D[0], "3", EPOCHS - 1)
    by_index = label_bands(frame, "filter-grid")
    assert all(any(band[3::4]) for band in by_index)  # every cell has ink under it
    assert len({tuple(b) for b in by_index}) == 16  # sixteen different numbers

    before = grid.get_attribute("data-order")
    assert before == ",".join(map(str, range(16)))
    frame.locator("[data-testid=sort-picker]").select_option("l2")
    frame.locator(f'[data-testid=filter-grid]:not([data-order="{before}"])').wait_for()
    order = [int(f) for f in grid.get_attribute("data-order").split(",")]
    assert order != list(range(16))
    # The cell showing filter f after sorting carries the label cell f carried in index order.
    assert label_bands(frame, "filter-grid") == [by_index[f] for f in order]
    frame.locator("[data-testid=sort-picker]").select_option("index")


def ranking(frame, step: int) -> list[tuple[str, str]]:
    card = frame.locator(f'[data-testid=drift-ranking][data-step="{step}"]')
    card.wait_for()
    items = card.locator("[data-testid=drift-rank-item]")
    return [(items.nth(i).get_attribute("data-filter"), items.nth(i).text_content()) for i in range(items.count())]


def test_drift_ranking_is_since_the_first_step_unless_asked(frame, tensorboard_url):
    choose(frame, RUNS_2D[0], "3", EPOCHS - 1)
    card = frame.locator(f'[data-testid=drift-ranking][data-step="{EPOCHS - 1}"][data-since=first]')
    card.wait_for()
    assert card.locator(".cvz-card-title").text_content() == "Most changed since step 0"
    stats = layer_stats(tensorboard_url, RUNS_2D[0], "3", EPOCHS - 1)
    shown = [i.get_attribute("data-filter") for i in card.locator("[data-testid=drift-rank-item]").all()]
    assert shown == most_first(stats["cosine_distance_first"])[:10]

    frame.locator("[data-testid=drift-since] button[data-value=previous]").click()
    card = frame.locator("[data-testid=drift-ranking][data-since=previous]")
    assert card.locator(".cvz-card-title").text_content() == f"Most changed since step {EPOCHS - 2}"
    shown = [i.get_attribute("data-filter") for i in card.locator("[data-testid=drift-rank-item]").all()]
    assert shown == most_first(stats["cosine_distance_prev"])[:10]
    frame.locator("[data-testid=drift-since] button[data-value=first]").click()


def test_epoch_slider_moves_the_drift_ranking(frame):
    choose(frame, RUNS_2D[0], "0", 0)
    slider = frame.locator("[data-testid=epoch-slider]")
    assert slider.get_attribute("max") == str(EPOCHS - 1)

    slider.fill("1")
    grid_shows(frame, RUNS_2D[0], "0", step=1)
    early = ranking(frame, 1)
    slider.fill(str(EPOCHS - 1))
    grid_shows(frame, RUNS_2D[0], "0", step=EPOCHS - 1)
    late = ranking(frame, EPOCHS - 1)
    assert len(early) == len(late) == 8
    assert early != late
    assert frame.locator("[data-testid=epoch-label]").text_content() == str(EPOCHS - 1)

    slider.fill("0")
    first = frame.locator('[data-testid=drift-ranking][data-step="0"]')
    first.wait_for()
    assert "first logged step" in first.text_content()


def click_cell(frame, testid: str, cell: int) -> None:
    """Click the middle of grid cell `cell` (cells are laid out row by row, `data-pitch-*` apart)."""
    grid = frame.locator(f"[data-testid={testid}]")
    cols = int(grid.get_attribute("data-cols"))
    px, py = float(grid.get_attribute("data-pitch-x")), float(grid.get_attribute("data-pitch-y"))
    grid.click(position={"x": (cell % cols) * px + 6, "y": (cell // cols) * py + 6})


def test_filter_detail_shows_slices_maps_and_history(frame, tensorboard_url):
    choose(frame, RUNS_2D[0], "0", EPOCHS - 1)
    frame.locator("[data-testid=sort-picker]").select_option("cosine_distance_prev")
    grid = frame.locator("[data-testid=filter-grid]")
    first = grid.get_attribute("data-order").split(",")[0]

    grid.hover(position={"x": 6, "y": 6})
    tooltip = frame.locator("[data-testid=filter-grid-tooltip]")
    assert tooltip.is_visible()
    assert f"Filter #{first}" in tooltip.text_content()
    # Each statistic under its declared label (from /index: the dashboard lists none of its own).
    labels = {c["name"]: c["label"] for r in get_json(f"{tensorboard_url}/data/plugin/convviz/index")["runs"]
              if r["run"] == RUNS_2D[0] for c in r["columns"]}
    for stat in ("l2", "mean_abs", "cosine_distance_prev", "act_mean"):
        assert labels[stat] in tooltip.text_content()

    click_cell(frame, "filter-grid", 0)
    panel = frame.locator(f'[data-testid=detail-panel][data-filter="{first}"]')
    panel.wait_for()
    assert panel.locator("[data-testid=detail-title]").text_content() == f"Filter #{first}"
    assert panel.locator("[data-testid=detail-slices] canvas").count() == 3  # one per input channel
    assert panel.locator("[data-testid=detail-effective] canvas").count() == 3  # BatchNorm follows layer 0
    assert panel.locator("[data-testid=detail-map]").count() == 4  # every probe image kept
    # One history chart, of the column the select picks (the first, L2 norm, to begin with).
    charts = panel.locator("[data-testid=history-chart]")
    assert charts.count() == 1
    assert charts.first.locator("circle").count() == EPOCHS
    titles = lambda c: (c.locator(".cvz-axis-title[data-axis=x]").text_content(), c.locator(".cvz-axis-title[data-axis=y]").text_content())
    assert titles(charts.first) == ("step", "L2 norm")
    panel.locator("[data-testid=history-column]").select_option("cosine_distance_prev")
    chart = panel.locator("[data-testid=history-chart][data-column=cosine_distance_prev]")
    chart.wait_for()
    # tiny drifts: the ticks' shared power of ten goes into the title ("Drift vs prev. (×10⁻⁴)")
    assert re.fullmatch(r"Drift vs prev\.( \(×10[⁻¹²³⁴⁵⁶⁷⁸⁹⁰]+\))?", titles(chart)[1]) and titles(chart)[0] == "step"
    panel.locator("[data-testid=history-column]").select_option("l2")
    panel.locator("[data-testid=history-chart][data-column=l2]").wait_for()

    frame.locator("[data-testid=layer-picker]").select_option("3")
    grid_shows(frame, RUNS_2D[0], "3")
    assert frame.locator("[data-testid=detail-panel]").is_hidden()


def test_side_by_side_epochs_and_runs(frame):
    choose(frame, RUNS_2D[0], "3", EPOCHS - 1)

    frame.locator("[data-testid=mode-picker] button[data-value=epochs]").click()
    view = frame.locator("[data-testid=compare-view]")
    frame.locator("[data-testid=compare-grid-b][data-paint-ms]").wait_for()
    # One control per step: the slider is step B, the card's select step A.
    assert frame.locator("[data-testid=epoch-slider]").locator("xpath=..").locator("label").text_content() == "Step B"
    assert frame.locator("[data-testid=compare-step-a]").is_visible()
    assert frame.locator("[data-testid=compare-step-b]").is_hidden()
    assert frame.locator("[data-testid=compare-label-a]").text_content() == f"A · {RUNS_2D[0]} · step 0"
    assert frame.locator("[data-testid=compare-label-b]").text_content() == f"B · {RUNS_2D[0]} · step {EPOCHS - 1}"
    assert frame.locator("[data-testid=compare-basis]").get_attribute("data-basis") == "kernels"
    assert "full kernels" in frame.locator("[data-testid=compare-basis]").text_content()
    rows = frame.locator("[data-testid=compare-row]")
    assert rows.count() == 16
    by_drift = [rows.nth(i).get_attribute("data-filter") for i in range(16)]
    assert frame.locator("[data-testid=compare-grid-a]").get_attribute("data-order").split(",") == by_drift

    frame.locator("[data-testid=sort-norm_change]").click()
    frame.locator('[data-testid=compare-view][data-sort="norm_change"]').wait_for()
    by_norm = [rows.nth(i).get_attribute("data-filter") for i in range(16)]
    assert sorted(by_norm) == sorted(by_drift) and by_norm != by_drift

    # Consecutive steps: the drift the callback logged on the full weights.
    frame.locator("[data-testid=compare-step-a]").select_option(str(EPOCHS - 2))
    frame.locator('[data-testid=compare-basis][data-basis="logged"]').wait_for()

    frame.locator("[data-testid=mode-picker] button[data-value=runs]").click()
    label_b = frame.locator("[data-testid=compare-label-b]")
    label_b.filter(has_text=XSS_RUN).wait_for()
    assert label_b.text_content() == f"B · {XSS_RUN} · step {EPOCHS - 1}"
    # Run B is another run, and only other runs are offered; the slider is step A, the card's select step B.
    run_b = frame.locator("[data-testid=compare-run-b]")
    assert run_b.input_value() == XSS_RUN
    assert RUNS_2D[0] not in run_b.locator("option").all_text_contents()
    assert frame.locator("[data-testid=epoch-slider]").locator("xpath=..").locator("label").text_content() == "Step A"
    assert frame.locator("[data-testid=compare-step-a]").is_hidden()
    assert frame.locator("[data-testid=compare-step-b]").is_visible()
    assert view.locator("[data-testid=align-picker] [aria-pressed=true]").get_attribute("data-value") == "match"
    b_filters = [rows.nth(i).locator("td").nth(2).text_content() for i in range(16)]
    # A pairing; a partner whose kernel matches with the sign flipped is marked "±".
    flipped = [t.endswith(" ±") for t in b_filters]
    b_filters = [t.removesuffix(" ±") for t in b_filters]
    assert sorted(b_filters, key=lambda t: int(t[1:])) == [f"#{i}" for i in range(16)]
    assert sum(flipped) == int(view.locator("[data-testid=compare-summary] dd").nth(4).text_content())
    assert frame.locator("img").count() == 0

    rows.first.click()
    frame.locator("[data-testid=detail-panel]").wait_for()


def test_empty_logdir_says_what_to_do(browser, tmp_path):
    with tensorboard(tmp_path) as url:
        page = browser.new_page()
        try:
            # With no data the tab is inactive in TensorBoard's menu: open its frame directly.
            page.goto(f"{url}/data/plugin_entry.html?name=convviz")
            status = page.locator('[data-testid=status][data-phase="empty"]')
            status.wait_for(timeout=15_000)
            assert "No convviz data in this logdir: add ConvViz(...) to your training loop." in status.text_content()
            assert page.locator("[data-testid=toolbar]").is_hidden()
        finally:
            page.close()
