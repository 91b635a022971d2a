"""A `fires_on_errors` finding in the Findings view: the planted saboteur is listed with its test,
and its link opens the Impact view sorted by the rank test's AUC, the saboteur first and selected,
its p beside it in the detail."""
from __future__ import annotations

from pathlib import Path

from conftest import served_runs
from planted_more_findings import SABOTEUR, VICTIMS, write_sabotaged_run
from tbserver import tensorboard, wait_for


def test_the_saboteur_fires_on_errors_and_its_link_opens_impact_sorted_by_its_auc(browser, tmp_path: Path):
    write_sabotaged_run(tmp_path / "sabotaged")
    with tensorboard(tmp_path) as url:
        assert wait_for(lambda: served_runs(url) >= 1, timeout=60), "tensorboard did not serve the run within 60 s"
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        errors: list = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        try:
            page.goto(f"{url}/#convviz")
            frame = page.frame_locator('iframe[src*="name=convviz"]')
            frame.locator("[data-testid=findings-view][data-loading=false] [data-testid=finding]").first.wait_for()
            finding = frame.locator("[data-testid=finding][data-kind=fires_on_errors]")
            assert finding.count() == 1 and finding.get_attribute("data-filters") == str(SABOTEUR)
            assert "AUC 1.00" in finding.text_content() and f"{VICTIMS} errors" in finding.text_content()
            finding.locator("[data-testid=finding-link]").click()
            frame.locator('[data-testid=impact-view][data-sort="errors_auc"][data-loading=false]').wait_for()
            panel = frame.locator(f'[data-testid=detail-panel][data-filter="{SABOTEUR}"]')
            panel.wait_for()
            assert frame.locator("[data-testid=impact-row]").first.get_attribute("data-filter") == str(SABOTEUR)
            assert panel.locator("[data-testid=column-errors_auc]").text_content().startswith("1.00")
            assert panel.locator("[data-testid=column-errors_p]").text_content().startswith("< 0.001")
            assert "cvz.sort=errors_auc" in page.url and f"cvz.filter={SABOTEUR}" in page.url
            assert errors == []
        finally:
            context.close()
