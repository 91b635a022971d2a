"""Screenshot of the CONVVIZ tab revealing the planted marker's filter (docs/screenshot-bias.png).

Trains the planted-bias demo into LOGDIR unless it already holds a run, serves it with
TensorBoard, and in headless Chromium opens LAYER's Impact view sorted by the "remove marker"
column with the most sensitive filter's detail open.

    python demo/screenshot_bias.py                       # -> docs/screenshot-bias.png
    python demo/screenshot_bias.py --layer conv1 --out /tmp/conv1.png
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

import planted_bias
from demo_common import launch

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


def screenshot(url: str, layer: str, out: str, width: int, height: int) -> str:
    """Save the Impact view of `layer`, sorted by "remove marker", its top filter open; returns that filter."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        raise SystemExit("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(30_000)
            page.goto(f"{url}/#convviz")
            tab = page.frame_locator('iframe[src*="name=convviz"]')
            tab.locator("[data-testid=filter-grid][data-paint-ms]").wait_for()
            tab.locator("[data-testid=layer-picker]").select_option(layer)
            tab.locator(f'[data-testid=filter-grid][data-layer="{layer}"]').wait_for()
            tab.locator("[data-testid=mode-picker] button[data-value=impact]").click()
            tab.locator('[data-testid=impact-sort][data-metric="cf/remove marker"]').click()
            tab.locator('[data-testid=impact-view][data-sort="cf/remove marker"][data-loading=false]').wait_for()
            top = tab.locator("[data-testid=impact-row]").first
            chosen = top.get_attribute("data-filter")
            top.click()
            panel = tab.locator(f'[data-testid=detail-panel][data-filter="{chosen}"]')
            panel.locator("[data-testid=top-example] canvas").first.wait_for()
            panel.locator("[data-testid=counterfactual-row]").first.wait_for()
            page.wait_for_timeout(500)  # let the last canvases paint
            page.screenshot(path=out)
        finally:
            browser.close()
    return chosen


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--logdir", default="runs/convviz_bias", help="the demo's logdir (default: %(default)s)")
    parser.add_argument("--layer", default="conv2", help="the layer to show (default: %(default)s)")
    parser.add_argument("--out", default="docs/screenshot-bias.png", help="where the PNG goes (default: %(default)s)")
    parser.add_argument("--size", default="1560x1050", help="viewport WIDTHxHEIGHT (default: %(default)s)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.split("x"))
    if not os.path.isdir(os.path.join(args.logdir, "seed0")):
        planted_bias.main(["--logdir", args.logdir, "--no-serve"])
    with socket.socket() as s:  # a free port
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = launch(args.logdir, port)
    wait_for_runs(url)
    chosen = screenshot(url, args.layer, args.out, width, height)
    print(f"{args.out}: layer {args.layer}, filter #{chosen} open")


if __name__ == "__main__":
    main(sys.argv[1:])
