"""The CONVVIZ tab in headless Chromium against a real TensorBoard process."""
from __future__ import annotations

from conftest import RUN_1D, RUNS_2D, XSS_RUN, EPOCHS

TIMEOUT_MS = 15_000


def open_tab(page, url: str):
    """Open the CONVVIZ tab and wait for the first grid to be painted; returns the tab's frame."""
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(f"{url}/#convviz")
    frame = page.frame_locator('iframe[src*="name=convviz"]')
    frame.locator("[data-testid=filter-grid][data-paint-ms]").wait_for()
    return frame


def grid_shows(frame, run: str, layer: str, step: int | None = None):
    """Wait until the grid was painted for `layer` (at `step`); returns the canvas locator."""
    sel = f'[data-testid=filter-grid][data-layer="{layer}"]'
    if step is not None:
        sel += f'[data-step="{step}"]'
    grid = frame.locator(sel)
    grid.wait_for()
    assert frame.locator("[data-testid=run-picker]").input_value() == run
    return grid


def test_run_names_are_text_and_grid_counts_the_layers_filters(page, tensorboard_url):
    frame = open_tab(page, tensorboard_url)
    picker = frame.locator("[data-testid=run-picker]")
    names = picker.locator("option").all_text_contents()
    assert sorted(names) == sorted([*RUNS_2D, RUN_1D])
    assert picker.input_value() == XSS_RUN  # '<' sorts first: the hostile name is the one shown
    assert frame.locator("img").count() == 0

    frame.locator("[data-testid=layer-picker]").select_option("3")
    grid = grid_shows(frame, XSS_RUN, "3")
    assert grid.get_attribute("data-filter-count") == "16"
    assert frame.locator("[data-testid=layer-title]").text_content() == "Layer 3"

    picker.select_option(RUN_1D)
    grid = grid_shows(frame, RUN_1D, "0")
    assert grid.get_attribute("data-filter-count") == "6"


def ranking(frame, step: int) -> list[tuple[str, str]]:
    card = frame.locator(f'[data-testid=drift-ranking][data-step="{step}"]')
    card.wait_for()
    items = card.locator("[data-testid=drift-rank-item]")
    return [(items.nth(i).get_attribute("data-filter"), items.nth(i).text_content()) for i in range(items.count())]


def test_epoch_slider_moves_the_drift_ranking(page, tensorboard_url):
    frame = open_tab(page, tensorboard_url)
    frame.locator("[data-testid=run-picker]").select_option(RUNS_2D[0])
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
