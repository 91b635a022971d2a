"""The view state lives in TensorBoard's address: a reload — or the same link opened by a
colleague — shows the same run, layer, view, step and filter (and run vs run's run B, step B and
pairing step)."""
from __future__ import annotations

from conftest import EPOCHS, RUNS_2D, XSS_RUN, choose


def shown(frame) -> dict:
    """What the tab shows: its pickers, the pressed view, the slider and the open filter."""
    detail = frame.locator("[data-testid=detail-panel]")
    return {
        "run": frame.locator("[data-testid=run-picker]").input_value(),
        "layer": frame.locator("[data-testid=layer-picker]").input_value(),
        "view": frame.locator("[data-testid=mode-picker] [aria-pressed=true]").get_attribute("data-value"),
        "step": frame.locator("[data-testid=epoch-slider]").input_value(),
        "filter": detail.get_attribute("data-filter") if detail.is_visible() else None,
    }


def test_a_reload_shows_the_same_view_step_and_filter(tab, frame):
    choose(frame, RUNS_2D[1], "3", 2)
    frame.locator("[data-testid=mode-picker] button[data-value=embedding]").click()
    frame.locator('[data-testid=embedding-plot][data-step="2"] [data-testid=embedding-point]').first.wait_for()
    frame.locator("[data-testid=embedding-point]").nth(5).click()
    frame.locator('[data-testid=detail-panel][data-filter="5"]').wait_for()
    before = shown(frame)
    assert before == {"run": XSS_RUN, "layer": "3", "view": "embedding", "step": "2", "filter": "5"}
    assert "cvz.view=embedding" in tab.page.url and tab.page.url.split("#")[1].startswith("convviz&")

    tab.page.reload()
    frame.locator('[data-testid=detail-panel][data-filter="5"]').wait_for()
    frame.locator('[data-testid=embedding-plot][data-step="2"]').wait_for()
    assert shown(frame) == before

    # Run vs run keeps run B, step B and the pairing step too; a link opened anew shows them.
    frame.locator("[data-testid=mode-picker] button[data-value=runs]").click()
    frame.locator("[data-testid=compare-run-b]").select_option(RUNS_2D[0])
    frame.locator("[data-testid=compare-step-b]").select_option("1")
    frame.locator("[data-testid=compare-pair-step]").select_option("3")
    frame.locator("[data-testid=compare-headline]", has_text="paired at step 3").wait_for()
    link = tab.page.url
    page = tab.page.context.new_page()
    try:
        page.goto(link)
        other = page.frame_locator('iframe[src*="name=convviz"]')
        other.locator("[data-testid=compare-headline]", has_text="paired at step 3").wait_for()
        assert other.locator("[data-testid=compare-run-b]").input_value() == RUNS_2D[0]
        assert other.locator("[data-testid=compare-step-b]").input_value() == "1"
        assert other.locator("[data-testid=compare-pair-step]").input_value() == "3"
        assert shown(other)["step"] == "2" and shown(other)["run"] == XSS_RUN
    finally:
        page.close()
    assert EPOCHS > 3
