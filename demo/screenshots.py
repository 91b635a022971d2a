"""The README's screenshots of the CONVVIZ tab, taken from the demos' own logs in headless Chromium.

* bias (docs/screenshot-bias.png): the planted-bias demo's Impact view of LAYER sorted by the
  "remove marker" counterfactual, the most sensitive filter's detail open;
* impact (docs/screenshot-impact.png): the same run's Impact view of conv1 by Δaccuracy, the
  first filter's tuning and top examples open;
* findings (docs/screenshot-findings.png): the planted-bias demo's Findings view, what the run opens on;
* compare (docs/screenshot-compare.png): the digits demo's run vs run view of its first layer,
  filters paired by activation, the most changed pair open.

Each demo trains into its logdir first unless that already holds a run.

    python demo/screenshots.py                     # all three
    python demo/screenshots.py --shot bias --layer conv1 --out /tmp/conv1.png
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import sys
import time
import urllib.request
from typing import Optional, Sequence

import digits
import planted_bias
from demo_common import launch

VIEWS = {"findings": "findings"}  # the view an address opens a shot on (else the Filters view)
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def wait_for_runs(url: str, timeout: float = 60.0) -> None:
    """Until the convviz index lists a run: TensorBoard loads event files in the background."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/data/plugin/convviz/index", timeout=2) as r:
                if json.load(r)["runs"]:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"TensorBoard at {url} listed no convviz run within {timeout:.0f} s")
        time.sleep(0.3)


def _open(tab, layer: str) -> None:
    tab.locator("[data-testid=filter-grid][data-paint-ms]").wait_for()
    tab.locator("[data-testid=layer-picker]").select_option(layer)
    tab.locator(f'[data-testid=filter-grid][data-layer="{layer}"]').wait_for()


def _impact(tab, layer: str, metric: Optional[str]) -> str:
    """The Impact view of `layer` (sorted by `metric`, else its default), its first row's detail
    open once its top examples are drawn; returns that filter."""
    _open(tab, layer)
    tab.locator("[data-testid=mode-picker] button[data-value=impact]").click()
    if metric is not None:
        tab.locator(f'[data-testid=impact-sort][data-metric="{metric}"]').click()
        tab.locator(f'[data-testid=impact-view][data-sort="{metric}"][data-loading=false]').wait_for()
    else:
        tab.locator("[data-testid=impact-view][data-loading=false]").wait_for()
    top = tab.locator("[data-testid=impact-row]").first
    chosen = top.get_attribute("data-filter")
    top.click()
    panel = tab.locator(f'[data-testid=detail-panel][data-filter="{chosen}"]')
    panel.locator("[data-testid=top-example] canvas").first.wait_for()
    return chosen


def _compare(tab, layer: str) -> str:
    """Run vs run on `layer`, paired by activation, the most changed pair's detail open."""
    _open(tab, layer)
    tab.locator("[data-testid=mode-picker] button[data-value=runs]").click()
    tab.locator("[data-testid=compare-grid-b][data-paint-ms]").wait_for()
    top = tab.locator("[data-testid=compare-row]").first
    top.click()
    panel = tab.locator("[data-testid=detail-panel]")
    panel.wait_for()
    return panel.get_attribute("data-filter") or "?"


def _findings(tab, layer: str) -> str:
    """The Findings view the run opens on, once its findings are listed; returns the top finding's kind."""
    tab.locator("[data-testid=findings-view][data-loading=false] [data-testid=finding]").first.wait_for()
    return tab.locator("[data-testid=finding]").first.get_attribute("data-kind") or "?"


SHOTS = {
    "findings": _findings,
    "bias": lambda tab, layer: _impact(tab, layer, "cf/remove marker"),
    "impact": lambda tab, layer: _impact(tab, layer, None),
    "compare": _compare,
}


def screenshot(url: str, shot: str, layer: str, out: str, width: int, height: int) -> str:
    """Save one of SHOTS of `layer` at `url` to `out`; returns the filter whose detail is open."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            page.goto(f"{url}/#convviz&cvz.view={VIEWS.get(shot, 'filters')}")
            chosen = SHOTS[shot](page.frame_locator('iframe[src*="name=convviz"]'), layer)
            page.wait_for_timeout(500)  # let the last canvases paint
            page.screenshot(path=out)
        finally:
            browser.close()
    return chosen


# shot → (demo, its logdir, layer, PNG)
DEFAULTS = {
    "findings": (planted_bias, "runs/convviz_bias", "conv2", "docs/screenshot-findings.png"),
    "bias": (planted_bias, "runs/convviz_bias", "conv2", "docs/screenshot-bias.png"),
    "impact": (planted_bias, "runs/convviz_bias", "conv1", "docs/screenshot-impact.png"),
    "compare": (digits, "runs/convviz_demo", "conv2", "docs/screenshot-compare.png"),
}


def _serve(logdir: str) -> str:
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = launch(logdir, port)
    wait_for_runs(url)
    return url


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shot", choices=[*DEFAULTS, "all"], default="all", help="which screenshot (default: %(default)s)")
    parser.add_argument("--logdir", help="the demo's logdir (default: the demo's own)")
    parser.add_argument("--layer", help="the layer to show (default: the shot's)")
    parser.add_argument("--out", help="where the PNG goes (default: the README's)")
    parser.add_argument("--size", default="1560x1050", help="viewport WIDTHxHEIGHT (default: %(default)s)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    urls: dict[str, str] = {}
    for shot in DEFAULTS if args.shot == "all" else [args.shot]:
        demo, logdir, layer, out = DEFAULTS[shot]
        logdir, layer, out = args.logdir or logdir, args.layer or layer, args.out or out
        if not os.path.isdir(os.path.join(logdir, "seed0")):
            demo.main(["--logdir", logdir, "--no-serve"])
        if logdir not in urls:
            urls[logdir] = _serve(logdir)
        chosen = screenshot(urls[logdir], shot, layer, out, width, height)
        print(f"{out}: {shot}, layer {layer}, filter #{chosen} open")


if __name__ == "__main__":
    main(sys.argv[1:])
