"""The Findings view, what a run opens on: it lists the planted findings of a run, and a click on a
finding's link opens the view with its evidence — layer, step, sort column and filter selected."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from conftest import served_runs
from planted_findings import DEAD, LAYER, MARKER, NEEDED, NEEDED_CLASS, write_planted_run
from tbserver import tensorboard, wait_for


@pytest.fixture(scope="module")
def planted(browser, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, list]]:
    root = tmp_path_factory.mktemp("findings_view")
    write_planted_run(root / "planted")
    with tensorboard(root) as url:
        if not wait_for(lambda: served_runs(url) >= 1, timeout=60):
            raise RuntimeError("tensorboard did not serve the planted run within 60 s")
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        errors: list = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/#convviz")  # no view named: the tab opens on Findings
        try:
            yield page, page.frame_locator('iframe[src*="name=convviz"]'), errors
        finally:
            context.close()


def test_the_tab_opens_on_findings_listing_the_planted_ones_and_a_link_opens_the_evidence(planted, tmp_path: Path):
    page, frame, errors = planted
    view = frame.locator('[data-testid=findings-view][data-loading=false][data-step="2"]')
    view.locator("[data-testid=finding]").first.wait_for()
    assert frame.locator("[data-testid=mode-picker] [aria-pressed=true]").get_attribute("data-value") == "findings"
    kinds = [g.get_attribute("data-kind") for g in frame.locator("[data-testid=findings-group]").all()]
    assert kinds[:2] == ["shortcut", "needed"] and {"dead", "duplicate", "fragile_class"} <= set(kinds)
    shortcut = frame.locator('[data-testid=finding][data-kind=shortcut]').first
    assert shortcut.get_attribute("data-filters") == str(MARKER) and "class 3" in shortcut.text_content()
    needed = frame.locator('[data-testid=finding][data-kind=needed]').first
    assert needed.get_attribute("data-filters") == str(NEEDED) and f"class {NEEDED_CLASS} recall" in needed.text_content()
    assert frame.locator('[data-testid=finding][data-kind=dead]').get_attribute("data-filters") == str(DEAD)
    missing = frame.locator("[data-testid=findings-unavailable-kind]")
    assert "texture" in [m.get_attribute("data-kind") for m in missing.all()]
    page.screenshot(path=str(tmp_path / "findings.png"))

    needed.locator("[data-testid=finding-link]").click()
    impact = frame.locator('[data-testid=impact-view][data-step="2"][data-sort="d_accuracy"][data-loading=false]')
    impact.wait_for()
    assert frame.locator("[data-testid=layer-picker]").input_value() == LAYER
    frame.locator(f'[data-testid=detail-panel][data-filter="{NEEDED}"]').wait_for()
    assert frame.locator(f'[data-testid=impact-row][data-filter="{NEEDED}"]').get_attribute("aria-selected") == "true"
    assert "cvz.sort=d_accuracy" in page.url and f"cvz.filter={NEEDED}" in page.url

    # A weight finding opens the Filters view, its grid sorted by the kernel norm, the dead filter open.
    frame.locator("[data-testid=mode-picker] button[data-value=findings]").click()
    frame.locator('[data-testid=finding][data-kind=dead] [data-testid=finding-link]').click()
    frame.locator(f'[data-testid=detail-panel][data-filter="{DEAD}"]').wait_for()
    assert frame.locator("[data-testid=mode-picker] [aria-pressed=true]").get_attribute("data-value") == "filters"
    assert "cvz.view=filters" in page.url and "cvz.sort=l2" in page.url and f"cvz.filter={DEAD}" in page.url
    assert errors == []
