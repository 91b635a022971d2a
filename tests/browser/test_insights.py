"""The insights the routes add, drawn by the dashboard in headless Chromium against a real
TensorBoard serving logs the real callback wrote: Δaccuracy intervals and significance in the
Impact view, what a larger probe would buy, the kernel footprint hint and shape vs texture per layer."""
from __future__ import annotations


from conftest import LAST, RUN_IMPACT, RUN_INSIGHTS, answer, choose, open_impact


def test_impact_rows_carry_intervals_and_grey_what_is_not_significant(frame, tensorboard_url):
    rows = open_impact(frame, RUN_IMPACT, "0")
    arrays = answer(tensorboard_url, f"impact?run={RUN_IMPACT}&layer=0&step={LAST}")["arrays"]
    exact = [bool(v) for v in arrays["exact"]["values"]]
    significant = [bool(v) for v in arrays["significant"]["values"]]
    ci = arrays["d_accuracy_ci"]["values"]
    assert rows.count() == len(exact)
    with_interval = sum(1 for f, e in enumerate(exact) if e and ci[2 * f] is not None and ci[2 * f + 1] is not None)
    # Δaccuracy's column: an error bar per exactly ablated filter (other columns carry their own)
    column = frame.locator("[data-testid=impact-sort]").evaluate_all("bs => bs.map(b => b.dataset.metric)").index("d_accuracy")
    barred = rows.evaluate_all(
        "(rs, k) => rs.filter(r => r.querySelectorAll('td.cvz-num')[k].querySelector('[data-testid=impact-errorbar]')).length", column
    )
    assert barred == with_interval > 0
    # Greyed: filters only estimated (not ablated exactly) and, where the index names the
    # significance column, those ablated exactly whose change is not significant.
    names = answer(tensorboard_url, "index")["names"]
    insignificant = sum(1 for e, s in zip(exact, significant) if e and not s) if names.get("impact_significant") else 0
    assert frame.locator("[data-testid=impact-row].cvz-insignificant").count() == insignificant
    assert frame.locator("[data-testid=impact-row].cvz-estimated").count() == exact.count(False)
    # The Significant column says it of each filter, as the route does.
    column = frame.locator("[data-testid=impact-sort]").evaluate_all("bs => bs.map(b => b.dataset.metric)").index("significant")
    said = {r.get_attribute("data-filter"): r.locator("td.cvz-num").nth(column).text_content() for r in rows.all()}
    assert said == {str(f): ("yes" if s else "no") for f, s in enumerate(significant)}
    # Each bar's interval line spans the row's own interval: its left end is left of its right end.
    spans = frame.locator("[data-testid=impact-errorbar] line.cvz-errorbar-ci").evaluate_all(
        "ls => ls.map(l => [Number(l.getAttribute('x1')), Number(l.getAttribute('x2'))])"
    )
    assert all(x1 <= x2 for x1, x2 in spans)
    count = frame.locator("[data-testid=flag-count][data-name=significant]").text_content()
    assert count == f"{sum(significant)} of {len(exact)}"


def test_examples_needed_are_said_in_plain_words(frame, tensorboard_url):
    open_impact(frame, RUN_IMPACT, "0")
    needed = answer(tensorboard_url, f"impact?run={RUN_IMPACT}&layer=0&step={LAST}")["examples_needed"]
    text = frame.locator("[data-testid=examples-needed]").text_content()
    smallest = min(needed, key=float)
    assert f"a {round(float(smallest) * 100)}% change: {needed[smallest]} images of a class" in text
    for effect, n in needed.items():
        assert f"{round(float(effect) * 100)}%" in text and str(n) in text


def test_footprint_hint_is_the_routes(frame, tensorboard_url):
    choose(frame, RUN_INSIGHTS, "0", LAST)
    footprint = answer(tensorboard_url, f"layer?run={RUN_INSIGHTS}&layer=0&step={LAST}")["footprint"]
    assert footprint["hint"]  # the planted ring-damped 5×5
    hint = frame.locator("[data-testid=footprint-hint]")
    assert hint.text_content() == footprint["hint"] + ". "
    assert "3×3" in hint.text_content()
    energy = frame.locator("[data-testid=footprint-energy]").text_content()
    kept3 = int((footprint["ring_energy"][0] + footprint["ring_energy"][1]) * 100 + 1e-9)
    assert f"3×3 {kept3}%" in energy and energy.endswith("5×5 100%")  # the whole kernel keeps all, whatever float rounding says


def test_shape_texture_shows_one_row_per_layer_and_a_column(frame, tensorboard_url):
    open_impact(frame, RUN_INSIGHTS, "0")
    st = answer(tensorboard_url, f"shape_texture?run={RUN_INSIGHTS}&step={LAST}")
    rows = frame.locator("[data-testid=shape-texture-row]")
    rows.first.wait_for()
    assert rows.evaluate_all("rs => rs.map(r => r.dataset.layer)") == st["layers"]
    bins = len(st["edges"]) - 1
    shares = rows.first.locator(".cvz-st-bin").evaluate_all("cs => cs.map(c => Number(c.style.getPropertyValue('--share')))")
    assert len(shares) == bins
    assert [round(s * st["filters"][0]) for s in shares] == st["histograms"][0]
    index = answer(tensorboard_url, f"perturbation?run={RUN_INSIGHTS}&layer=0&step={LAST}")["arrays"]["st/index"]["values"]
    frame.locator("[data-testid=impact-sort][data-metric='st/index']").click()
    frame.locator('[data-testid=impact-view][data-sort="st/index"]').wait_for()
    shown = [float(v) for v in frame.locator("[data-testid=impact-row]").evaluate_all("rs => rs.map(r => r.dataset.value)")]
    # Declared to sort by magnitude first: the most shape- or texture-driven filters lead.
    assert shown == sorted(index, key=abs, reverse=True)


def test_a_run_without_shape_texture_shows_no_distribution(frame):
    open_impact(frame, RUN_IMPACT, "0")
    assert frame.locator("[data-testid=shape-texture]").is_hidden()
