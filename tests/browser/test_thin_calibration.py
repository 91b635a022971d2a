"""An exact-ablation budget too small for any calibration sample: the Impact view says the
Taylor-vs-exact ρ has not enough sampled filters yet (/table's ρ is NaN over 0 filters), and the
filters it could not ablate exactly read as estimates. Headless Chromium, real TensorBoard over logs
the real callback wrote with impact={"exact_budget": 0.5}."""
from __future__ import annotations

import pytest
import torch

from conftest import answer, opened_tab, served_runs
from models import two_conv_net
from tbserver import tensorboard, wait_for
from training import one_thread, train_and_log
from wire import decode_wire

RUN = "thin"
LAST = 1


@pytest.fixture(scope="module")
def thin_tab(browser, tmp_path_factory):
    """The Impact view of a run whose budget (half a probe pass) leaves no room for a calibration sample."""
    root = tmp_path_factory.mktemp("thin_logs")
    x, y = torch.randn(12, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2] * 4)
    with one_thread():
        torch.manual_seed(0)
        train_and_log(root / RUN, two_conv_net((6, 8), classes=3), (x, y), lambda: [(x, y)], range(LAST + 1), lr=0.3,
                      impact={"exact_budget": 0.5}, perturbations=False)
    with tensorboard(root) as url:
        if not wait_for(lambda: served_runs(url) >= 1, timeout=60):
            raise RuntimeError("tensorboard did not serve the run within 60 s")
        with opened_tab(browser, url) as (frame, errors):
            frame.locator("[data-testid=filter-grid][data-paint-ms]").wait_for()
            frame.locator("[data-testid=mode-picker] button[data-value=impact]").click()
            frame.locator(f'[data-testid=impact-view][data-step="{LAST}"][data-loading=false]').wait_for()
            yield frame, url, errors


def test_rho_without_a_sample_says_so(thin_tab):
    frame, url, errors = thin_tab
    scalars = {s["name"]: s for s in answer(url, f"table?run={RUN}&layer=0&step={LAST}")["scalars"]}
    rho = scalars["taylor_spearman"]
    assert rho["value"] is None and rho["filters"] == 0  # NaN: nothing to rank
    shown = frame.locator("[data-testid=layer-scalar][data-name=taylor_spearman]")
    assert shown.text_content() == "not enough sampled filters yet"
    assert shown.locator("xpath=..").get_attribute("title").startswith(rho["description"])
    assert errors == []


def test_filters_not_ablated_exactly_read_as_estimates(thin_tab):
    frame, url, errors = thin_tab
    names = answer(url, "index")["names"]
    table = answer(url, f"table?run={RUN}&layer=0&step={LAST}")
    exact = decode_wire(table["values"][names["impact_exact"]])
    estimated = {str(f) for f, v in enumerate(exact) if v == 0}
    assert estimated, "half a probe pass cannot ablate every filter"
    rows = frame.locator("[data-testid=impact-row].cvz-estimated")
    assert set(rows.evaluate_all("rs => rs.map(r => r.dataset.filter)")) == estimated
    assert rows.first.get_attribute("title").startswith("Not ablated exactly at this step")
    assert errors == []
