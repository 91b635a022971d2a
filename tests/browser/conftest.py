"""Fixtures for the CONVVIZ tab in a real browser: logs from the real callback, a real
`tensorboard` process serving them, and headless Chromium driven by Playwright."""
from __future__ import annotations

import contextlib
import json
import shutil
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest
import torch
from torch import nn

from models import two_conv_net
from tbserver import get_json, tensorboard, wait_for
from training import one_thread, train_and_log
from wire import plain_arrays
from user_metrics import METRICS

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

XSS_RUN = "<img src=x onerror=alert(1)>"
RUNS_2D = ("baseline", XSS_RUN)
RUN_1D = "signal_1d"
RUN_IMPACT = "impact_3class"  # impact=True, a counterfactual and user metrics; the other runs log perturbations only
RUN_INSIGHTS = "insights_5x5"  # shape_texture, impact, and a 5×5 first layer that a 3×3 would do
RUNS = (*RUNS_2D, RUN_1D, RUN_IMPACT, RUN_INSIGHTS)
EPOCHS = 6
LAST = EPOCHS - 1  # the step most tests look at
# The tab opens on the Findings view; most tests start from the Filters view, as this address asks.
FILTERS_VIEW = "#convviz&cvz.view=filters"
IMPACT_PROBE = 24  # labelled probe images of the impact run: top-5 examples out of these
WIDE_FILTERS = 300  # the 1-D run's second layer: more rows than the Impact table draws before "show all"


def signal_net() -> nn.Sequential:
    """Conv1d layers "0" (6 filters), "2" (WIDE_FILTERS: more than the Impact table draws at once)
    and "4" (4 filters reading WIDE_FILTERS channels: more slices than get a canvas each)."""
    return nn.Sequential(
        nn.Conv1d(2, 6, 5, padding=2),
        nn.ReLU(),
        nn.Conv1d(6, WIDE_FILTERS, 3),
        nn.ReLU(),
        nn.Conv1d(WIDE_FILTERS, 4, 1),
        nn.AdaptiveAvgPool1d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )


def no_red(batch: torch.Tensor) -> torch.Tensor:
    """A counterfactual: the probe without its red channel."""
    return batch * torch.tensor([0.0, 1.0, 1.0]).view(1, 3, 1, 1)


def log_minibatch_sgd(
    model: nn.Module,
    logdir: Path,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    seed: int,
    *,
    probe_n: int = 4,
    lr: float = 0.5,
    batches: int = 3,
    **options: Any,
) -> None:
    """EPOCHS epochs of `batches` SGD steps each on random minibatches of 16, with a large step so
    filters visibly change between epochs; the first `probe_n` inputs are the probe, `options` go to ConvViz."""
    gen = torch.Generator().manual_seed(seed)

    def epoch() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for _ in range(batches):
            batch = torch.randint(0, inputs.shape[0], (16,), generator=gen)
            yield inputs[batch], labels[batch]

    train_and_log(logdir, model, (inputs[:probe_n], labels[:probe_n]), epoch, range(EPOCHS), lr=lr, **options)


def write_logs(root: Path) -> Path:
    """Two Conv2d runs (one named like an HTML injection), a Conv1d run and a Conv2d run with impact."""
    with one_thread():
        _write_runs(root)
    return root


def _write_runs(root: Path) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(64, 3, 12, 12, generator=g)
    image_labels = (images[:, 0].mean(dim=(1, 2)) > 0).long() + 2 * (images[:, 1, :6].mean(dim=(1, 2)) > 0).long()
    for seed, run in enumerate(RUNS_2D):
        torch.manual_seed(seed)
        log_minibatch_sgd(two_conv_net((8, 16), classes=4), root / run, images, image_labels, seed)
    signals = torch.randn(48, 2, 32, generator=g)
    signal_labels = (signals[:, 0].mean(dim=1) > 0).long() + (signals[:, 1].mean(dim=1) > 0).long()
    torch.manual_seed(7)
    # Its layers take turns at responses (as a large model's do): "2" at steps 0, 2, 4, "0" and "4" at 0, 1, 3, 5.
    log_minibatch_sgd(signal_net(), root / RUN_1D, signals, signal_labels, 7, response_filters=WIDE_FILTERS)
    colours = torch.randn(96, 3, 12, 12, generator=g) + torch.randn(96, 3, 1, 1, generator=g)  # a colour cast each
    brightest = colours.mean(dim=(2, 3)).argmax(dim=1)
    torch.manual_seed(3)
    log_minibatch_sgd(
        two_conv_net((8, 12), classes=3, batchnorm=False), root / RUN_IMPACT, colours, brightest, 3,
        probe_n=IMPACT_PROBE, lr=0.3, batches=10, impact=True, counterfactuals={"no_red": no_red},
        perturbations={"rotate_probe": True}, metrics=METRICS,
    )
    torch.manual_seed(5)
    log_minibatch_sgd(
        ring_damped_net(), root / RUN_INSIGHTS, images, image_labels, 5,
        probe_n=16, lr=0.3, impact=True, perturbations={"shape_texture": True},
    )


def ring_damped_net() -> nn.Sequential:
    """A 5×5 conv ("0") whose outer ring starts at 5% of its weights, so its footprint hints that a
    3×3 would do, then a 3×3 conv ("2") and a 4-class head; input (n, 3, h, w)."""
    net = nn.Sequential(
        nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )
    ring = torch.ones(5, 5, dtype=torch.bool)
    ring[1:4, 1:4] = False
    with torch.no_grad():
        net[0].weight[:, :, ring] *= 0.05
    return net


@pytest.fixture(scope="session")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_logs(tmp_path_factory.mktemp("convviz_logs"))


def served_runs(url: str) -> int:
    """How many runs the convviz index of the TensorBoard at `url` lists; 0 while it does not answer."""
    try:
        return len(get_json(f"{url}/data/plugin/convviz/index", timeout=2)["runs"])
    except (OSError, ValueError, KeyError):
        return 0


@pytest.fixture(scope="session")
def tensorboard_url(logdir: Path) -> Iterator[str]:
    """A real `tensorboard` serving `logdir`, once its convviz index lists every run."""
    with tensorboard(logdir) as url:
        if not wait_for(lambda: served_runs(url) >= len(RUNS), timeout=60):
            raise RuntimeError(f"tensorboard did not serve {len(RUNS)} convviz runs within 60 s")
        yield url


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (apt-get install chromium): browser tests need it")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Tab:
    """The CONVVIZ tab open in one page: its frame, and whatever dialogs or page errors occurred."""

    page: Any
    frame: Any
    dialogs: list = field(default_factory=list)
    errors: list = field(default_factory=list)


@contextlib.contextmanager
def opened_tab(browser: Any, url: str) -> Iterator[tuple[Any, list]]:
    """The CONVVIZ tab of the TensorBoard at `url` in a page of its own, in the Filters view: its
    frame, and the page's uncaught errors (for fixtures over a logdir of their own)."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    errors: list = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{url}/{FILTERS_VIEW}")
    try:
        yield page.frame_locator('iframe[src*="name=convviz"]'), errors
    finally:
        context.close()


@pytest.fixture(scope="module")
def tab(browser, tensorboard_url: str) -> Iterator[Tab]:
    """TensorBoard's page opened once per test module (loading it takes seconds); tests choose
    their run, layer and view themselves. Any JavaScript dialog (alert from injected markup) or
    uncaught page error fails the test during which it happened."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    t = Tab(page, page.frame_locator('iframe[src*="name=convviz"]'))
    page.on("dialog", lambda d: (t.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda e: t.errors.append(str(e)))
    page.goto(f"{tensorboard_url}/{FILTERS_VIEW}")
    t.frame.locator("[data-testid=filter-grid][data-paint-ms]").wait_for()
    try:
        yield t
    finally:
        context.close()


def grid_shows(frame: Any, run: str, layer: str, step: Optional[int] = None) -> Any:
    """Wait until the grid was painted for `layer` (at `step`); returns the canvas locator."""
    sel = f'[data-testid=filter-grid][data-layer="{layer}"]'
    if step is not None:
        sel += f'[data-step="{step}"]'
    grid = frame.locator(sel)
    grid.wait_for()
    assert frame.locator("[data-testid=run-picker]").input_value() == run
    return grid


def choose(frame: Any, run: str, layer: str, step: int) -> Any:
    """Pick run, layer and step as a user would; returns the grid once painted for them."""
    frame.locator("[data-testid=run-picker]").select_option(run)
    frame.locator("[data-testid=layer-picker]").select_option(layer)
    steps = frame.locator("[data-testid=epoch-slider]")
    steps.fill(str(step))  # the runs here log steps 0..EPOCHS-1: slider position = step
    return grid_shows(frame, run, layer, step)


@pytest.fixture
def frame(tab: Tab) -> Iterator[Any]:
    """The tab's frame, back in the Filters view with no filter open; no dialog or error may occur."""
    f = tab.frame
    f.locator("[data-testid=mode-picker] button[data-value=filters]").click()
    close = f.locator("[data-testid=detail-panel] .cvz-icon-button")
    if close.is_visible():
        close.click()
    yield f
    assert tab.dialogs == [], f"a dialog opened: {tab.dialogs}"
    assert tab.errors == [], f"uncaught errors in the page: {tab.errors}"


def answer(url: str, route: str, *, wire: bool = False) -> dict:
    """A route's answer; an analysis answer's wire arrays decoded as the dashboard decodes them,
    unless `wire` asks for them as sent."""
    with urllib.request.urlopen(f"{url}/data/plugin/convviz/{route}", timeout=10) as r:
        found = json.load(r)
    return plain_arrays(found) if "arrays" in found and not wire else found


def open_impact(frame: Any, run: str, layer: str, step: int = LAST) -> Any:
    """Pick run, layer and step, switch to the Impact view; returns its rows once drawn for them."""
    choose(frame, run, layer, step)
    frame.locator("[data-testid=mode-picker] button[data-value=impact]").click()
    frame.locator(f'[data-testid=impact-view][data-step="{step}"][data-loading=false]').wait_for()
    return frame.locator("[data-testid=impact-row]")
