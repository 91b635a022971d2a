"""Feature visualisations in the tab: the grid switches from kernels to visualisations, a filter's
detail shows its filmstrip over the logged epochs, run vs run puts each pair's images side by side.
Headless Chromium, a real TensorBoard over logs the real callback wrote with feature_vis on."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from conftest import answer, opened_tab, served_runs
from models import two_conv_net
from tbserver import tensorboard, wait_for
from training import one_thread, train_and_log

RUNS = ("seed0", "seed1")
LAST = 2
FILTERS = {"0": [0, 1, 2, 3, 4, 5], "3": [0, 1, 2, 3]}


@pytest.fixture(scope="module")
def vis_tab(browser, tmp_path_factory):
    root = tmp_path_factory.mktemp("fv_logs")
    x, y = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2] * 4)
    with one_thread():
        for seed, run in enumerate(RUNS):
            torch.manual_seed(seed)
            train_and_log(root / run, two_conv_net((6, 8), classes=3), (x, y), lambda: [(x, y)], range(LAST + 1), lr=0.5,
                          perturbations=False, feature_vis={"filters": FILTERS, "steps": 24})
    with tensorboard(root) as url:
        if not wait_for(lambda: served_runs(url) >= len(RUNS), timeout=60):
            raise RuntimeError("tensorboard did not serve the runs within 60 s")
        with opened_tab(browser, url) as (frame, errors):
            frame.locator("[data-testid=filter-grid][data-paint-ms]").wait_for()
            yield frame, url, errors


def shoot(frame, name: str) -> None:
    """A 1400×900 screenshot of the page for people to look at, where CONVVIZ_SCREENSHOTS names a folder."""
    folder = os.environ.get("CONVVIZ_SCREENSHOTS")
    if folder:
        frame.locator("body").page.screenshot(path=str(Path(folder) / f"{name}.png"))


def test_the_grid_switches_to_visualizations(vis_tab):
    frame, url, errors = vis_tab
    frame.locator("[data-testid=run-picker]").select_option(RUNS[0])
    frame.locator("[data-testid=layer-picker]").select_option("3")
    frame.locator(f'[data-testid=filter-grid][data-layer="3"][data-step="{LAST}"]').wait_for()
    assert frame.locator("[data-testid=vis-grid]").is_hidden()
    frame.locator("[data-testid=show-picker] button[data-value=visualizations]").click()
    grid = frame.locator(f'[data-testid=vis-grid][data-step="{LAST}"]')
    grid.wait_for()
    assert frame.locator("[data-testid=filter-grid]").is_hidden()
    assert grid.get_attribute("data-filters") == ",".join(map(str, FILTERS["3"]))
    assert grid.get_attribute("data-filter-count") == str(len(FILTERS["3"]))
    note = frame.locator("[data-testid=layer-note]").text_content()
    assert f"Feature visualisations of {len(FILTERS['3'])} of 8 filters" in note
    # The cells are the images the route sends, in true colour: not one flat colour.
    pixels = grid.evaluate("c => { const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
                           " const seen = new Set(); for (let i = 0; i < d.length; i += 4) if (d[i + 3]) seen.add(d[i] + ',' + d[i + 1] + ',' + d[i + 2]);"
                           " return seen.size; }")
    assert pixels > 50
    shoot(frame, "feature-vis-grid")
    # Clicking a cell opens that filter (the grid's cell 2 is filter FILTERS[2]).
    pitch_x, cell_h = float(grid.get_attribute("data-pitch-x")), float(grid.get_attribute("data-cell-height"))
    grid.click(position={"x": 2 * pitch_x + 4, "y": cell_h / 2})
    frame.locator(f'[data-testid=detail-panel][data-filter="{FILTERS["3"][2]}"]').wait_for()
    assert errors == []


def test_the_filter_detail_shows_its_filmstrip_over_the_epochs(vis_tab):
    frame, url, errors = vis_tab
    frame.locator("[data-testid=run-picker]").select_option(RUNS[0])
    frame.locator("[data-testid=layer-picker]").select_option("0")
    frame.locator("[data-testid=show-picker] button[data-value=weights]").click()
    frame.locator(f'[data-testid=filter-grid][data-layer="0"][data-step="{LAST}"]').wait_for()
    grid = frame.locator("[data-testid=filter-grid]")
    grid.click(position={"x": float(grid.get_attribute("data-pitch-x")) + 4, "y": 8})
    frame.locator('[data-testid=detail-panel][data-filter="1"]').wait_for()
    frames = frame.locator("[data-testid=detail-visualization] [data-testid=filmstrip-frame]")
    frames.first.wait_for()
    expected = answer(url, f"feature_vis_history?run={RUNS[0]}&layer=0&filter=1")["steps"]
    assert expected == list(range(LAST + 1))
    assert frames.evaluate_all("fs => fs.map(f => Number(f.dataset.step))") == expected
    assert frame.locator(".cvz-filmstrip-current").get_attribute("data-step") == str(LAST)
    note = frame.locator("[data-testid=filmstrip-note]").text_content()
    assert note.startswith(f"At step {LAST}: activation") and "the probe's best example reaches" in note
    frame.locator("[data-testid=detail-visualization]").scroll_into_view_if_needed()
    shoot(frame, "feature-vis-filmstrip")
    assert errors == []


def test_run_vs_run_shows_each_pairs_visualizations_side_by_side(vis_tab):
    frame, url, errors = vis_tab
    frame.locator("[data-testid=run-picker]").select_option(RUNS[0])
    frame.locator("[data-testid=layer-picker]").select_option("3")
    frame.locator("[data-testid=mode-picker] button[data-value=runs]").click()
    pairs = frame.locator("[data-testid=vis-pair]")
    pairs.first.wait_for()
    compare = answer(url, f"compare?layer=3&run_a={RUNS[0]}&step_a={LAST}&run_b={RUNS[1]}&step_b={LAST}&align=match")
    both = {f for f in FILTERS["3"] if compare["match"][f] in FILTERS["3"]}
    assert {int(f) for f in pairs.evaluate_all("ps => ps.map(p => p.dataset.filter)")} == both
    assert pairs.first.locator("canvas").count() == 2
    frame.locator("[data-testid=compare-visualizations]").scroll_into_view_if_needed()
    shoot(frame, "feature-vis-compare")
    frame.locator("[data-testid=mode-picker] button[data-value=filters]").click()
    assert errors == []
