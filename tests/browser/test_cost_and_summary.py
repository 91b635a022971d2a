"""What a log cost and what the layer's numbers rest on, as the dashboard draws them in headless
Chromium against a real TensorBoard serving logs the real callback wrote: the cost line of the
slider's step against /cost (its parts in order, seconds, shares, probe passes), the slow-analysis warning, the
Impact view's whole-layer numbers against /table's scalars (the pooled Taylor-vs-exact ρ with its
sample), greyed rows where /index names the significance column, and the impact flags and
response charts read from the wire arrays /impact and /perturbation answer."""
from __future__ import annotations

import re

from conftest import EPOCHS, LAST, RUN_IMPACT, RUNS_2D, answer, choose, open_impact
from wire import decode_wire


# What the warning names to change, by the part that cost most (the ConvViz options).
ADVICE = {
    "impact": ["exact_budget"],
    "perturbation": ["perturbations=False", "response_filters"],
    "statistics and maps": ["map_images", "map_size"],
    "similarity": ["similarity_images"],
    "writing": ["kernels_every"],
    "metrics": ["metrics=[...]"],
}


def close_seconds(text: str, seconds: float) -> bool:
    """Whether the line's "97 s", "2.4 s", "35 ms", "0.4 ms" or "<0.1 ms" says `seconds`, to its last digit."""
    if text == "<0.1 ms":
        return 0 < seconds < 0.0001
    value, unit = text.split(" ")
    scale = 1e-3 if unit == "ms" else 1.0
    digits = len(value.split(".")[1]) if "." in value else 0
    return abs(float(value) * scale - seconds) <= 0.5 * 10 ** -digits * scale + 1e-12


def passes_text(n: float) -> str:
    """Forward-equivalents as the line writes them: 52, 4.2, 0.05."""
    if n >= 10:
        return str(round(n))
    if n >= 1:
        return f"{n:.1f}".removesuffix(".0")
    return f"{n:.1g}"


def cost_row(frame, run: str, step: int):
    row = frame.locator(f'[data-testid=cost-line][data-step="{step}"]')
    row.wait_for()
    assert row.get_attribute("data-run") == run
    return row


def test_the_cost_line_of_each_step_names_its_largest_part(frame, tensorboard_url):
    costs = answer(tensorboard_url, f"cost?run={RUN_IMPACT}")
    assert costs["steps"] == list(range(EPOCHS)) and all(costs["costs"])
    slow_seen = fast_seen = 0
    for step, cost in zip(costs["steps"], costs["costs"]):
        choose(frame, RUN_IMPACT, "0", step)
        row = cost_row(frame, RUN_IMPACT, step)
        largest = max(cost["parts"], key=lambda name: cost["parts"][name]["wall_s"])
        assert row.get_attribute("data-largest") == largest
        first = row.locator("[data-testid=cost-part]").first
        assert first.get_attribute("data-part") == largest
        share = cost["parts"][largest]["wall_s"] / cost["wall_s"]
        assert first.text_content().startswith(f"{largest} ") and first.text_content().endswith(f"({share:.0%})")
        # The line: the whole, its probe passes beside it, then the four largest parts in order with
        # their seconds and shares, "…" for the rest — the numbers of the /cost answer.
        passes = cost["forward_equivalents"]
        text = row.locator("[data-testid=cost-text]").text_content()
        said = re.fullmatch(r"this log: (.+?) \(= ([\d.]+) probe pass(?:es)?\) — (.*)", text)
        assert said, text
        assert close_seconds(said.group(1), cost["wall_s"]), (said.group(1), cost["wall_s"])
        assert abs(float(said.group(2)) - passes) <= 0.051 * max(1.0, passes)
        ranked = sorted(cost["parts"], key=lambda name: (-cost["parts"][name]["wall_s"], name))
        shown = said.group(3).split(", ")
        assert (shown[-1] == "…") == (len(ranked) > 4)
        for name, part in zip(ranked, shown[:4]):
            words = re.fullmatch(r"(.+) (<?[\d.]+ m?s) \((<?\d+)%\)", part)
            assert words and words.group(1) == name, (part, name)
            wall = cost["parts"][name]["wall_s"]
            assert close_seconds(words.group(2), wall), (name, words.group(2), wall)
            percent = 100 * wall / cost["wall_s"]
            assert words.group(3) == "<1" and percent < 0.5 or abs(int(words.group(3)) - percent) <= 0.5, (name, part)
        # Hover: the part's own cost in probe passes.
        fe = cost["parts"][largest]["forward_equivalents"]
        assert f"= {passes_text(fe)} probe pass" in first.get_attribute("title"), (first.get_attribute("title"), fe)
        # The warning when the log's analysis took longer than the training since the previous log.
        slow = cost["since_last_log_s"] is not None and cost["wall_s"] > cost["since_last_log_s"]
        warning = row.locator("[data-testid=cost-warning]")
        assert warning.is_visible() == slow, (step, cost["wall_s"], cost["since_last_log_s"])
        if slow:
            slow_seen += 1
            words = warning.text_content()
            assert words.startswith("analysis is slower than training") and f"Largest part, {largest}" in words
            for option in ADVICE.get(largest, ["every_n_epochs"]):
                assert option in words, (largest, words)
        else:
            fast_seen += 1
    assert fast_seen >= 1  # the first log has nothing to compare with
    assert slow_seen >= 1, "the test logs (tiny training, every analysis on) should be slower than training"


def test_the_cost_line_follows_the_run_and_stays_in_every_view(frame, tensorboard_url):
    run = RUNS_2D[0]
    costs = answer(tensorboard_url, f"cost?run={run}")
    choose(frame, run, "0", 2)
    row = cost_row(frame, run, 2)
    cost = costs["costs"][costs["steps"].index(2)]
    assert row.get_attribute("data-largest") == max(cost["parts"], key=lambda n: cost["parts"][n]["wall_s"])
    for mode in ("impact", "similarity", "filters"):
        frame.locator(f"[data-testid=mode-picker] button[data-value={mode}]").click()
        assert row.is_visible(), mode


def test_the_layer_summary_draws_tables_scalars_with_the_pooled_sample(frame, tensorboard_url):
    open_impact(frame, RUN_IMPACT, "0")
    scalars = {s["name"]: s for s in answer(tensorboard_url, f"table?run={RUN_IMPACT}&layer=0&step={LAST}")["scalars"]}
    assert {"accuracy", "detectable_d_accuracy", "taylor_spearman"} <= set(scalars)
    for name, scalar in scalars.items():
        dd = frame.locator(f"[data-testid=layer-scalar][data-name='{name}']")
        item = dd.locator("xpath=..")
        assert item.locator("dt").text_content() == scalar["label"]
        assert item.get_attribute("title").startswith(scalar["description"])
        if scalar["format"] == "percent":
            assert dd.text_content() == f"{100 * scalar['value']:.1f}%", name
    rho = scalars["taylor_spearman"]
    assert rho["filters"] >= 3 and rho["steps"] and rho["value"] is not None
    text = frame.locator("[data-testid=layer-scalar][data-name=taylor_spearman]").text_content()
    said = re.fullmatch(r"(-?[\d.]+) over (\d+) sampled filters from steps? ([\d, …]+)", text)
    assert said, text
    assert abs(float(said.group(1)) - rho["value"]) <= 5e-3
    assert int(said.group(2)) == rho["filters"]
    assert said.group(3) == ", ".join(map(str, rho["steps"]))
    title = frame.locator("[data-testid=layer-scalar][data-name=taylor_spearman]").locator("xpath=..").get_attribute("title")
    assert "sampled at steps" in title or "sampled at step" in title


def test_rows_whose_change_is_not_significant_are_grey(frame, tensorboard_url):
    open_impact(frame, RUN_IMPACT, "0")
    significant = answer(tensorboard_url, "index")["names"]["impact_significant"]
    table = answer(tensorboard_url, f"table?run={RUN_IMPACT}&layer=0&step={LAST}")
    flags = decode_wire(table["values"][significant])
    grey = {str(f) for f, v in enumerate(flags) if v == 0}
    assert grey, "the test logs' small probe makes no filter significant"
    shown = set(frame.locator("[data-testid=impact-row].cvz-insignificant").evaluate_all("rs => rs.map(r => r.dataset.filter)"))
    assert shown == grey
    # Grey indeed: the numbers of a greyed row are drawn lighter than its filter's name.
    row = frame.locator("[data-testid=impact-row].cvz-insignificant").first
    colours = row.evaluate("r => [getComputedStyle(r.querySelector('.cvz-filter-cell')).color, getComputedStyle(r.querySelector('td.cvz-num:not(.cvz-sorted)')).color]")
    assert colours[0] != colours[1], colours
    assert "not significant" in row.get_attribute("title")


def test_flags_and_response_charts_read_the_wire_arrays(frame, tensorboard_url):
    rows = open_impact(frame, RUN_IMPACT, "0")
    names = answer(tensorboard_url, "index")["names"]
    impact = answer(tensorboard_url, f"impact?run={RUN_IMPACT}&layer=0&step={LAST}", wire=True)
    assert all("enc" in wire and "data" in wire for wire in impact["arrays"].values())  # wire arrays, decoded by api.js
    concentrated = decode_wire(impact["arrays"][f"{names['top_example_prefix']}flag"])
    badges = frame.locator("[data-testid=impact-flag][data-flag=class]").evaluate_all(
        "bs => bs.map(b => b.closest('tr').dataset.filter)")
    assert sorted(map(int, badges)) == [f for f, v in enumerate(concentrated) if v]
    responses = answer(tensorboard_url, f"perturbation?run={RUN_IMPACT}&layer=0&step={LAST}", wire=True)
    flagged = decode_wire(responses["arrays"][f"{names['counterfactual_prefix']}no_red/flag"])
    cf = frame.locator("[data-testid=impact-flag][data-flag=counterfactual]").evaluate_all("bs => bs.map(b => b.closest('tr').dataset.filter)")
    assert sorted(map(int, cf)) == [f for f, v in enumerate(flagged) if v]
    # A filter's detail draws its responses from the same answer: its tuning curve among them.
    rows.first.click()
    panel = frame.locator("[data-testid=detail-panel][data-loading=false]")
    panel.wait_for()
    responses_box = frame.locator("[data-testid=detail-responses]")
    assert responses_box.locator("svg").count() > 0
    assert frame.locator("[data-testid=detail-responses-message]").count() == 0
    assert frame.locator("[data-testid=top-example]").count() > 0
