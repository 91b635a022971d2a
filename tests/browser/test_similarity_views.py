"""The Similarity (CKA) and Filter map views, and run vs run with aligned inputs, in headless
Chromium against a real TensorBoard serving the callback's real logs."""
from __future__ import annotations

import pytest

from conftest import EPOCHS, RUN_1D, RUNS_2D, XSS_RUN, choose


def open_mode(frame, mode: str) -> None:
    frame.locator(f"[data-testid=mode-picker] button[data-value={mode}]").click()


def values(cells) -> list[float]:
    return [float(v) for v in cells.evaluate_all("cs => cs.map(c => c.dataset.value)")]


def test_cka_layer_by_layer_of_a_run_against_itself_has_ones_on_its_diagonal(frame):
    choose(frame, RUNS_2D[0], "3", EPOCHS - 1)
    layers = frame.locator("[data-testid=layer-picker] option").evaluate_all("os => os.map(o => o.value)")
    open_mode(frame, "similarity")
    figure = frame.locator("[data-testid=cka-layers]")
    figure.wait_for()
    assert frame.locator("[data-testid=cka-legend]").is_visible()
    n = len(layers)
    cells = figure.locator("[data-testid=cka-layers-cell]")
    assert cells.count() == n * n
    assert figure.locator("[data-testid=cka-layers-row-label]").all_text_contents() == layers
    assert figure.locator("[data-testid=cka-layers-col-label]").all_text_contents() == layers
    matrix = values(cells)
    for i in range(n):
        assert matrix[i * n + i] == pytest.approx(1.0, abs=1e-4)
    assert all(-1e-6 <= v <= 1 + 1e-6 for v in matrix)
    assert min(matrix) < 0.999  # different layers represent the probe differently

    cells.nth(1).hover()
    readout = frame.locator("[data-testid=cka-layers-readout]").text_content()
    assert f"A layer {layers[0]} · B layer {layers[1]}: CKA" in readout

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


def test_filter_map_draws_one_point_per_filter_and_a_click_opens_it(frame):
    choose(frame, RUNS_2D[0], "3", EPOCHS - 1)
    open_mode(frame, "embedding")
    plot = frame.locator(f'[data-testid=embedding-plot][data-step="{EPOCHS - 1}"]')
    plot.wait_for()
    points = plot.locator("[data-testid=embedding-point]")
    assert points.count() == 16
    assert points.evaluate_all("ps => ps.map(p => Number(p.dataset.filter))") == list(range(16))
    assert plot.locator("polyline").count() == 16  # a trail per filter over the earlier steps

    frame.locator("[data-testid=embedding-color]").select_option("l2")
    frame.locator("[data-testid=embedding-view] .cvz-legend-note", has_text="L2 norm").wait_for()

    points.nth(15).click()  # drawn last: on top of any filter it overlaps
    panel = frame.locator('[data-testid=detail-panel][data-filter="15"]')
    panel.wait_for()
    assert panel.locator("[data-testid=detail-title]").text_content() == "Filter #15"

    frame.locator("[data-testid=epoch-slider]").fill("0")
    frame.locator('[data-testid=embedding-plot][data-step="0"]').wait_for()
    assert frame.locator("[data-testid=embedding-plot] polyline").count() == 0  # nothing before the first step


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
