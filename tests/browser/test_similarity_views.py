"""The Similarity (CKA) and Filter map views, and run vs run with aligned inputs, in headless
Chromium against a real TensorBoard serving the callback's real logs."""
from __future__ import annotations

import pytest

from conftest import EPOCHS, RUN_1D, RUNS_2D, XSS_RUN, choose


def open_mode(frame, mode: str) -> None:
    frame.locator(f"[data-testid=mode-picker] button[data-value={mode}]").click()


def values(cells) -> list[float]:
    return [float(v) for v in cells.evaluate_all("cs => cs.map(c => c.dataset.value)")]


def assert_readable_axis(ticks, title, name: str) -> None:
    """An axis a reader can read: at least two tick labels, none in exponent notation ("-3.06e-5"),
    and a non-empty title."""
    labels = ticks.all_text_contents()
    assert len(labels) >= 2, (name, labels)
    assert not any("e-" in t or "e+" in t for t in labels), (name, labels)
    assert title.text_content().strip(), name


def test_cka_layer_by_layer_of_a_run_against_itself_has_ones_on_its_diagonal(frame):
    choose(frame, RUNS_2D[0], "3", EPOCHS - 1)
    layers = frame.locator("[data-testid=layer-picker] option").evaluate_all("os => os.map(o => o.value)")
    open_mode(frame, "similarity")
    figure = frame.locator("[data-testid=cka-layers]")
    figure.wait_for()
    n = len(layers)
    cells = figure.locator("[data-testid=cka-layers-cell]")
    assert cells.count() == n * n
    assert figure.locator("[data-testid=cka-layers-row-label]").all_text_contents() == layers
    assert figure.locator("[data-testid=cka-layers-col-label]").all_text_contents() == layers
    matrix = values(cells)
    for i in range(n):
        assert matrix[i * n + i] == pytest.approx(1.0, abs=1e-4)
    assert all(-0.5 <= v <= 1.05 for v in matrix)  # debiased: may stray past [0, 1] by chance
    assert min(matrix) < 0.999  # different layers represent the probe differently
    # The colour legend spans the values shown — exactly, or 0.02 around them when they are closer
    # than that — and says so in the format of the cells.
    legend = figure.locator("[data-testid=cka-layers-legend]")
    assert legend.is_visible()
    lo, hi = float(legend.get_attribute("data-lo")), float(legend.get_attribute("data-hi"))
    assert lo <= min(matrix) + 1e-9 and hi >= max(matrix) - 1e-9
    assert hi - lo == pytest.approx(max(max(matrix) - min(matrix), 0.02), abs=1e-9)
    assert legend.locator(".cvz-legend-end").all_text_contents() == [f"{lo:.2f}", f"{hi:.2f}"]
    # The cells of the extremes get the colour scale's two ends.
    fills = cells.evaluate_all("cs => cs.map(c => c.getAttribute('fill'))")
    assert fills[matrix.index(min(matrix))] != fills[matrix.index(max(matrix))]

    cells.nth(1).hover()
    readout = frame.locator("[data-testid=cka-layers-readout]").text_content()
    # These logs keep 4 probe images: the leave-one-out interval needs 5.
    assert ", 4 probe images" in frame.locator("[data-testid=cka-layers] figcaption").text_content()
    assert readout == f"A layer {layers[0]} · B layer {layers[1]}: CKA {matrix[1]:.2f} (4 images: too few for an interval)"

    # Against another run at its first step: the diagonal is no longer all ones.
    frame.locator("[data-testid=cka-run-b]").select_option(XSS_RUN)
    frame.locator("[data-testid=cka-step-b]").select_option("0")
    frame.locator("[data-testid=cka-layers] figcaption", has_text=f"B = {XSS_RUN} at step 0").wait_for()
    other = values(frame.locator("[data-testid=cka-layers-cell]"))
    assert len(other) == n * n and min(other[i * n + i] for i in range(n)) < 0.999
    assert frame.locator("img").count() == 0  # the hostile run name stayed text
    frame.locator("[data-testid=cka-run-b]").select_option("")


def test_cka_step_by_step_and_to_final(frame):
    choose(frame, RUNS_2D[0], "3", EPOCHS - 1)
    layers = frame.locator("[data-testid=layer-picker] option").evaluate_all("os => os.map(o => o.value)")
    open_mode(frame, "similarity")
    epochs = frame.locator("[data-testid=cka-epochs]")
    epochs.wait_for()
    cells = epochs.locator("[data-testid=cka-epochs-cell]")
    assert cells.count() == EPOCHS * EPOCHS
    assert epochs.locator("[data-testid=cka-epochs-row-label]").all_text_contents() == [str(s) for s in range(EPOCHS)]
    matrix = values(cells)
    for i in range(EPOCHS):
        assert matrix[i * EPOCHS + i] == pytest.approx(1.0, abs=1e-4)
        for j in range(EPOCHS):
            assert matrix[i * EPOCHS + j] == pytest.approx(matrix[j * EPOCHS + i], abs=1e-5)  # symmetric

    final = frame.locator("[data-testid=cka-final]")
    final.wait_for()
    assert final.get_attribute("data-rows") == str(len(layers))
    assert final.get_attribute("data-cols") == str(EPOCHS)
    to_final = values(final.locator("[data-testid=cka-final-cell]"))
    for r in range(len(layers)):
        assert to_final[r * EPOCHS + EPOCHS - 1] == pytest.approx(1.0, abs=1e-4)  # the last step with itself
    # Both axes of each heatmap carry their labels and a title (the rows' runs up the left edge).
    for name, figure in (("cka-epochs", epochs), ("cka-final", final)):
        assert_readable_axis(figure.locator(f"[data-testid={name}-col-label]"), figure.locator(f"[data-testid={name}-axis]"), name)
        assert_readable_axis(figure.locator(f"[data-testid={name}-row-label]"),
                             figure.locator(f"[data-testid={name}-row-axis]"), f"{name} rows")
    assert final.locator("[data-testid=cka-final-row-axis]").text_content() == "layer"
    # No row label runs into the rotated row title.
    title_box = final.locator("[data-testid=cka-final-row-axis]").bounding_box()
    for label in final.locator("[data-testid=cka-final-row-label]").all():
        assert label.bounding_box()["x"] >= title_box["x"] + title_box["width"], "row label overlaps the row title"


def test_filter_map_fills_its_panel_reads_out_at_the_cursor_and_a_click_opens_it(frame):
    choose(frame, RUNS_2D[0], "3", EPOCHS - 1)
    open_mode(frame, "embedding")
    plot = frame.locator(f'[data-testid=embedding-plot][data-step="{EPOCHS - 1}"]')
    plot.wait_for()
    points = plot.locator("[data-testid=embedding-point]")
    assert points.count() == 16
    assert points.evaluate_all("ps => ps.map(p => Number(p.dataset.filter))") == list(range(16))
    assert frame.locator("[data-testid=embedding-method] option").evaluate_all("os => os.map(o => o.value)")[0] == "pca"

    # The points' bounding box covers most of the plot's area (inside its axes).
    frame_box = plot.locator("rect").first.bounding_box()
    boxes = [points.nth(i).bounding_box() for i in range(16)]
    width = max(b["x"] + b["width"] for b in boxes) - min(b["x"] for b in boxes)
    height = max(b["y"] + b["height"] for b in boxes) - min(b["y"] for b in boxes)
    assert width > 0.8 * frame_box["width"] and height > 0.8 * frame_box["height"], (width, height, frame_box)
    assert plot.bounding_box()["width"] > 0.8 * frame.locator("[data-testid=embedding-view]").bounding_box()["width"]
    # Axes name their component and its share of variance.
    x_title = plot.locator("[data-testid=embedding-x-title]").text_content()
    y_title = plot.locator("[data-testid=embedding-y-title]").text_content()
    assert x_title.startswith("PC 1 · ") and "% of variance (axes scaled separately)" in x_title
    assert y_title.startswith("PC 2 · ")
    # Round tick labels on both axes (ticks.js), no "e-5" exponents: a shared power of ten goes in the title.
    for axis in ("x", "y"):
        assert_readable_axis(plot.locator(f"[data-testid=embedding-{axis}-tick]"), plot.locator(f"[data-testid=embedding-{axis}-title]"), axis)

    # Trails are optional, and off at first.
    assert plot.locator("polyline").count() == 0
    frame.locator("[data-testid=embedding-trails]").check()
    frame.locator("[data-testid=embedding-plot] polyline").first.wait_for()
    assert frame.locator("[data-testid=embedding-plot] polyline").count() == 16

    frame.locator("[data-testid=embedding-color]").select_option("l2")
    frame.locator("[data-testid=embedding-view] .cvz-legend-note", has_text="L2 norm").wait_for()

    target = frame.locator("[data-testid=embedding-point]").nth(15)  # drawn last: on top of any filter it overlaps
    box = target.bounding_box()
    target.hover()
    readout = frame.locator("[data-testid=embedding-readout]")
    readout.wait_for()
    assert readout.text_content().startswith("Filter #15 · L2 norm: ")
    at = readout.bounding_box()
    centre = (box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    assert abs(at["x"] - centre[0]) < 40 and abs(at["y"] - centre[1]) < 40  # at the cursor, not in a corner

    target.click()
    panel = frame.locator('[data-testid=detail-panel][data-filter="15"]')
    panel.wait_for()
    assert panel.locator("[data-testid=detail-title]").text_content() == "Filter #15"

    frame.locator("[data-testid=epoch-slider]").fill("0")
    frame.locator('[data-testid=embedding-plot][data-step="0"]').wait_for()
    assert frame.locator("[data-testid=embedding-plot] polyline").count() == 0  # nothing before the first step
    frame.locator("[data-testid=embedding-trails]").uncheck()


def test_filter_map_says_when_it_is_an_earlier_steps(frame):
    # The 1-D run's layers take turns at response profiles: layer "2" was last profiled a step before.
    choose(frame, RUN_1D, "2", EPOCHS - 1)
    open_mode(frame, "embedding")
    frame.locator(f'[data-testid=embedding-plot][data-step="{EPOCHS - 2}"]').wait_for()
    message = frame.locator("[data-testid=embedding-message]")
    assert message.is_visible()
    assert message.text_content().startswith(f"Map from step {EPOCHS - 2}, this layer's last response profiles before step {EPOCHS - 1}")
    frame.locator("[data-testid=epoch-slider]").fill(str(EPOCHS - 2))
    frame.locator("[data-testid=embedding-message]").wait_for(state="hidden")


def test_run_vs_run_aligned_fetches_align_aligned_and_says_the_match_basis(tab, frame):
    choose(frame, RUNS_2D[0], "3", EPOCHS - 1)
    open_mode(frame, "runs")
    frame.locator("[data-testid=compare-grid-b][data-paint-ms]").wait_for()
    with tab.page.expect_request(lambda r: "/compare?" in r.url and "align=aligned" in r.url):
        frame.locator("[data-testid=align-picker] button[data-value=aligned]").click()
    # The "match" answer drawn before may carry the same basis: wait for the aligned one's words.
    basis = frame.locator('[data-testid=compare-basis][data-match-basis="activations"]', has_text="in A's order")
    basis.wait_for()
    assert "paired by activations on the probe" in basis.text_content()
    assert "input channels in A's order, from the pairing of layer 0" in basis.text_content()
    frame.locator("[data-testid=compare-grid-a]").hover(position={"x": 6, "y": 6})
    assert "pair similarity" in frame.locator("[data-testid=compare-grid-a-tooltip]").text_content()
    frame.locator("[data-testid=align-picker] button[data-value=match]").click()


def test_run_vs_run_leads_with_pair_similarity_against_chance_and_pairs_at_a_chosen_step(tab, frame):
    choose(frame, RUNS_2D[0], "3", EPOCHS - 1)
    open_mode(frame, "runs")
    frame.locator("[data-testid=compare-grid-b][data-paint-ms]").wait_for()
    lead = frame.locator("[data-testid=compare-headline-similarity]")
    lead.wait_for()
    median, chance = float(lead.get_attribute("data-median")), float(lead.get_attribute("data-chance"))
    assert 0 < chance < 1 and 0 <= median <= 1
    assert f"Pair similarity: median {median:.2f}, chance {chance:.2f}" in lead.text_content()
    # 4 probe images: an optimal pairing of 16 filters reaches high similarity by chance alone.
    gap = median - chance
    assert lead.get_attribute("data-verdict") == (": pairs respond alike, well above chance" if gap >= 0.1 else
                                                   ": near chance, the pairs say little" if gap > -0.1 else ": below chance")
    assert "paired at step" in frame.locator("[data-testid=compare-headline]").text_content()
    assert frame.locator("[data-testid=compare-headline-drift]").text_content().startswith("Weight drift of the pairs (sign-aware")
    # The drift histogram: round ticks and a title on both axes, and it spans its panel's width.
    histogram = frame.locator("[data-testid=drift-histogram]")
    for axis in ("x", "y"):
        assert_readable_axis(histogram.locator(f"svg text[data-tick={axis}]"), histogram.locator(f"svg text[data-axis={axis}]"), axis)
    assert histogram.locator("svg text[data-tick=x]").all_text_contents()[0] == "0"
    assert histogram.locator("svg").bounding_box()["width"] > 0.95 * histogram.bounding_box()["width"]
    # Pairing at another step asks for it, and the headline says which.
    with tab.page.expect_request(lambda r: "/compare?" in r.url and "pair_step=1" in r.url):
        frame.locator("[data-testid=compare-pair-step]").select_option("1")
    frame.locator("[data-testid=compare-headline]", has_text="paired at step 1").wait_for()
    frame.locator("[data-testid=compare-pair-step]").select_option("-1")
