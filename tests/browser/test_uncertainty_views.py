"""What the tab shows of how sure the perturbation numbers are, and what it does not ask for:
noise stability, attack and counterfactual change with their intervals in the Impact table and the
filter detail, a counterfactual flag with its q, and no /shape_texture request for a run that
did not log it (headless Chromium, real TensorBoard)."""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from conftest import LAST, RUN_1D, RUN_IMPACT, RUN_INSIGHTS, answer, choose, open_impact

SHOTS = Path(os.environ.get("CONVVIZ_SCREENSHOTS", "/tmp/convviz_shots"))


def test_the_impact_view_asks_shape_texture_only_of_a_run_that_logged_it(tab, frame, tensorboard_url):
    asked: list[str] = []
    listen = lambda request: asked.append(request.url) if "/shape_texture" in request.url else None  # noqa: E731
    tab.page.on("request", listen)
    try:
        assert answer(tensorboard_url, "index")["runs"] and {
            r["run"]: r["shape_texture"] for r in answer(tensorboard_url, "index")["runs"]
        }[RUN_IMPACT] is False
        open_impact(frame, RUN_IMPACT, "0")
        frame.locator("[data-testid=epoch-slider]").fill("2")
        frame.locator('[data-testid=impact-view][data-step="2"][data-loading=false]').wait_for()
        assert asked == []  # logged perturbations, but no shape–texture: nothing to ask
        frame.locator("[data-testid=mode-picker] button[data-value=filters]").click()
        open_impact(frame, RUN_INSIGHTS, "0")
        frame.locator("[data-testid=shape-texture-row]").first.wait_for()
        assert len(asked) >= 1 and all(f"run={RUN_INSIGHTS}" in u for u in asked), asked
    finally:
        tab.page.remove_listener("request", listen)


def test_perturbation_numbers_show_their_interval_and_a_flag_its_q(tab, frame, tensorboard_url):
    rows = open_impact(frame, RUN_IMPACT, "0")
    table = answer(tensorboard_url, f"table?run={RUN_IMPACT}&layer=0&step={LAST}")
    by_name = {c["name"]: c for c in table["columns"]}
    assert by_name["stability"]["ci"] and by_name["cf/no_red"]["ci"] and by_name["fgsm"]["ci"]
    # Each value's cell carries its interval on hover and an error bar.
    for name in ("stability", "fgsm", "cf/no_red"):
        frame.locator(f'[data-testid=impact-sort][data-metric="{name}"]').click()
        frame.locator(f'[data-testid=impact-view][data-sort="{name}"]').wait_for()
        cell = rows.first.locator("td.cvz-sorted")
        assert re.search(r"95% interval .+ … .+", cell.get_attribute("title") or ""), (name, cell.get_attribute("title"))
    headers = frame.locator("[data-testid=impact-sort]").evaluate_all("bs => bs.map(b => b.dataset.metric)")
    assert headers.index("cf/no_red/q") == headers.index("cf/no_red/flag") + 1
    rows.first.click()
    panel = frame.locator("[data-testid=detail-panel][data-loading=false]")
    panel.wait_for()
    assert re.fullmatch(r"Mean over the levels [\d.]+ \[[\d.]+, [\d.]+\]: 95% interval over the probe's images\.",
                        panel.locator("[data-testid=stability-interval]").text_content())
    counterfactual = panel.locator("[data-testid=counterfactual-row] .cvz-bars-value").text_content()
    assert re.fullmatch(r"[+-]?[\d.<]+% \[[+-]?[\d.<]+%, [+-]?[\d.<]+%\] · q (< 0\.001|[\d.e-]+)", counterfactual), counterfactual
    adversarial = panel.locator("[data-testid=adversarial-bars] .cvz-bars-value").first.text_content()
    assert re.fullmatch(r"[\d.e+-]+ \[[\d.e+-]+, [\d.e+-]+\]", adversarial), adversarial
    SHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.set_viewport_size({"width": 1400, "height": 900})
    tab.page.screenshot(path=str(SHOTS / "impact_detail_intervals.png"))
    for testid in ("noise-chart", "adversarial-bars", "counterfactuals"):
        panel.locator(f"[data-testid={testid}]").screenshot(path=str(SHOTS / f"detail_{testid}.png"))
    tab.page.set_viewport_size({"width": 1440, "height": 1000})


def test_charts_have_round_ticks_a_zero_line_and_fill_the_panel(tab, frame):
    """The detail's charts: y ticks at round values without exponent notation (a shared power of
    ten goes into the axis title), x ticks at whole steps, a zero line where the values change sign,
    the panel's width, and the polar plot's radius scale beside it rather than on the curve."""
    rows = open_impact(frame, RUN_IMPACT, "0")
    rows.first.click()
    panel = frame.locator("[data-testid=detail-panel][data-loading=false]")
    panel.wait_for()
    picker = panel.locator("[data-testid=history-column]")
    crossing = None
    for name in picker.locator("option").evaluate_all("os => os.map(o => o.value)"):
        picker.select_option(name)
        chart = panel.locator(f"[data-testid=history-chart][data-column='{name}']")
        chart.wait_for()
        values = [v for v in json.loads(chart.get_attribute("data-values")) if v is not None]
        labels = chart.locator("text[data-tick=y]").all_text_contents()
        assert len(labels) >= 3 or len(set(values)) <= 1, (name, labels)
        assert not [t for t in labels if re.search(r"\de[-+]?\d", t)], (name, labels)
        assert chart.locator("text[data-tick=x]").count() >= 2
        if values and min(values) < 0 < max(values):
            crossing = name
            assert chart.locator("line.cvz-chart-zero").count() == 1, name
    assert crossing is not None  # some column here changes sign over the steps
    picker.select_option(crossing)
    chart = panel.locator(f"[data-testid=history-chart][data-column='{crossing}'] svg")
    width = chart.evaluate("s => s.getBoundingClientRect().width")
    room = chart.evaluate("s => s.closest('section').getBoundingClientRect().width")
    assert width >= 0.85 * room, (width, room)
    polar = panel.locator("[data-testid=polar-chart]")
    inside = polar.locator("svg text").all_text_contents()
    assert all(t.endswith("°") for t in inside), inside  # only the angle labels on the plot
    assert polar.locator("[data-testid=polar-scale]").text_content().startswith("grid circles:")
    tab.page.set_viewport_size({"width": 1400, "height": 900})
    panel.locator("[data-testid=history-chart]").screenshot(path=str(SHOTS / "history_chart.png"))
    panel.locator("[data-testid=noise-chart]").screenshot(path=str(SHOTS / "noise_chart.png"))
    polar.screenshot(path=str(SHOTS / "polar_chart.png"))
    tab.page.set_viewport_size({"width": 1440, "height": 1000})


def test_a_1d_activation_caption_heads_its_own_trace(tab, frame):
    """MNIST-1D-like traces stack in a column: each caption sits right above its trace, well apart
    from the trace before it, so it cannot be read as the other's."""
    choose(frame, RUN_1D, "0", LAST)
    frame.locator("[data-testid=filter-grid]").click(position={"x": 20, "y": 20})
    panel = frame.locator("[data-testid=detail-panel][data-loading=false]")
    panel.wait_for()
    maps = panel.locator("[data-testid=detail-map]")
    assert maps.count() >= 2
    boxes = maps.evaluate_all(
        "fs => fs.map(f => { const c = f.querySelector('figcaption').getBoundingClientRect();"
        " const t = f.querySelector('canvas').getBoundingClientRect(); return [c.top, c.bottom, t.top, t.bottom]; })"
    )
    for k, (cap_top, cap_bottom, trace_top, trace_bottom) in enumerate(boxes):
        assert 0 <= trace_top - cap_bottom <= 4, boxes[k]
        if k and boxes[k - 1][3] < cap_top:  # the trace above it in the same column
            assert cap_top - boxes[k - 1][3] >= 3 * (trace_top - cap_bottom) + 8, (boxes[k - 1], boxes[k])
    tab.page.set_viewport_size({"width": 1400, "height": 900})
    maps.nth(1).scroll_into_view_if_needed()
    tab.page.screenshot(path=str(SHOTS / "detail_1d_maps.png"))
    tab.page.set_viewport_size({"width": 1440, "height": 1000})


def test_a_greyed_row_says_its_interval_is_unadjusted_and_its_p_adjusted(frame, tensorboard_url):
    rows = open_impact(frame, RUN_IMPACT, "0")
    greyed = frame.locator("[data-testid=impact-row].cvz-insignificant")
    assert greyed.count() >= 1
    title = greyed.first.get_attribute("title")
    pct = r"[+-]?(<0\.01|\d+(\.\d+)?)%"
    assert re.fullmatch(
        rf"Greyed: Δaccuracy {pct} \[{pct}, {pct}\]: 95% interval for this filter alone, not adjusted; "
        r"not significant once adjusted for the layer's \d+ tested filters \(p = (< 0\.001|[\d.]+), Benjamini–Hochberg\)\.",
        title,
    ), title
    assert rows.count() == 8


def test_recall_per_class_reads_one_line_a_class(tab, frame):
    rows = open_impact(frame, RUN_IMPACT, "0")
    rows.first.click()
    bars = frame.locator("[data-testid=detail-panel] [data-testid=recall-bars] .cvz-bars-row")
    bars.first.wait_for()
    heights = bars.evaluate_all("rs => rs.map(r => r.getBoundingClientRect().height)")
    line = bars.first.locator(".cvz-bars-value").evaluate("v => parseFloat(getComputedStyle(v).lineHeight) || 16")
    assert len(heights) == 3 and max(heights) < 1.6 * line, (heights, line)
    tops = bars.first.evaluate(
        "r => [...r.children].map(c => Math.round(c.getBoundingClientRect().top + c.getBoundingClientRect().height / 2))"
    )
    assert max(tops) - min(tops) <= 4, tops  # label, bar and value side by side
