"""Benchmark: how fast the CONVVIZ tab is on a big layer. Not a test: the numbers are what it prints.

Writes synthetic logs with the real ConvViz callback (one Conv2d(256, 512, 3) layer, 50 epochs,
2 runs; the weights take a random step each epoch), starts a real `tensorboard` on them and prints:

* p50/p95 latency of the `layer` route and of the `compare` route (epoch vs epoch and run vs run),
  and of the `filter` route behind the detail panel,
  once with TensorBoard's default loader (the Rust data server where it runs) and once with
  `--load_fast=false` (the Python multiplexer);
* the time Chromium takes to paint the 512-filter grid after the data arrived (the grid's own
  `data-paint-ms`: from the parsed JSON to the frame painted);
* TensorBoard's resident memory with that logdir loaded (its process tree: the Rust data server too).

    /work/venv/bin/python bench/dashboard.py                 # logs in a temp dir, removed after
    /work/venv/bin/python bench/dashboard.py --logdir /tmp/cvz-bench --keep   # reuse them next time
"""
from __future__ import annotations

import argparse
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import ResNet18Shaped, perturb_weights  # noqa: E402
from tb_convviz import ConvViz  # noqa: E402

TARGET_ROUTE_P50_MS = 20.0
TARGET_PAINT_MS = 300.0
TARGET_RSS_MB = 1024.0

EPOCHS = 50
RUNS = ("run_a", "run_b")
LAYER = "conv"
FILTERS = 512


class BigLayer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(256, FILTERS, 3)
        self.head = nn.Linear(FILTERS, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


def write_runs(
    logdir: Path, make_model: Callable[[], nn.Module], probe_shape: tuple[int, ...], epochs: int, perturbations: bool
) -> float:
    """`epochs` × 2 runs of `make_model()`, every weight stepping a little each epoch (a stand-in for
    training); returns the seconds it took."""
    start = time.perf_counter()
    for seed, run in enumerate(RUNS):
        torch.manual_seed(seed)
        model = make_model()
        probe = (torch.randn(*probe_shape), torch.randint(0, 10, (probe_shape[0],)))
        with ConvViz(str(logdir / run), probe=probe, perturbations=perturbations) as viz:
            for epoch in range(epochs):
                perturb_weights(list(model.parameters()))
                viz.log(model, epoch, final=epoch == epochs - 1)
    return time.perf_counter() - start


def resnet_memory(logdir: Path, epochs: int, perturbations: bool) -> None:
    """TensorBoard's RSS, both loaders, with `epochs` × 2 runs of the ResNet-18-shaped net loaded."""
    if not (logdir / RUNS[0]).exists():
        what = "defaults" if perturbations else "perturbations=False (records ~0.25 MB/epoch smaller)"
        print(f"writing {len(RUNS)} runs × {epochs} epochs of the ResNet-18-shaped net, {what}, to {logdir} …", flush=True)
        print(f"  {write_runs(logdir, ResNet18Shaped, (8, 3, 112, 112), epochs, perturbations):.1f} s")
    size_mb = sum(f.stat().st_size for f in logdir.rglob("*") if f.is_file()) / 2**20
    print(f"logdir: {size_mb:.0f} MB")
    for label, extra in (("default loader", []), ("--load_fast=false", ["--load_fast=false"])):
        tb = TensorBoard(logdir, extra, epochs=epochs)
        try:
            rss = tb.rss_mb()
            print(f"  tensorboard ({label}): loaded in {tb.load_s:.1f} s, RSS {rss:.0f} MB   "
                  f"(target ≤ {TARGET_RSS_MB:.0f} MB: {verdict(rss, TARGET_RSS_MB)})")
        finally:
            tb.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as r:
        return r.read()


class TensorBoard:
    """A real `tensorboard` process; ready once the convviz index lists every run at every step."""

    def __init__(self, logdir: Path, extra: list[str], epochs: int = EPOCHS):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
             "--port", str(self.port), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        start = time.perf_counter()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited with {self.proc.returncode}")
            try:
                index = json.loads(get(f"{self.url}/data/plugin/convviz/index"))
                if len(index["runs"]) == len(RUNS) and all(
                    r["layers"] and all(len(layer["steps"]) == epochs for layer in r["layers"]) for r in index["runs"]
                ):
                    break
            except (OSError, ValueError, KeyError):
                pass
            if time.perf_counter() - start > 300:
                self.stop()
                raise RuntimeError("tensorboard did not load the bench logs within 5 minutes")
            time.sleep(0.5)
        self.load_s = time.perf_counter() - start

    def route(self, name: str, **params: object) -> str:
        return f"{self.url}/data/plugin/convviz/{name}?{urllib.parse.urlencode(params)}"

    def rss_mb(self) -> float:
        """Resident memory of the TensorBoard process and its children (the Rust data server)."""
        pids = [self.proc.pid]
        for pid in list(pids):
            children = Path(f"/proc/{pid}/task/{pid}/children")
            if children.exists():
                pids += [int(c) for c in children.read_text().split()]
        total_kb = 0
        for pid in pids:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        return total_kb / 1024

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def latencies_ms(urls: list[str]) -> list[float]:
    get(urls[0])  # warm: first touches decode caches
    out = []
    for url in urls:
        t = time.perf_counter()
        get(url)
        out.append((time.perf_counter() - t) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def route_urls(tb: TensorBoard, n: int) -> dict[str, list[str]]:
    rng = random.Random(0)
    steps = range(EPOCHS)
    return {
        "layer": [tb.route("layer", run=rng.choice(RUNS), layer=LAYER, step=rng.choice(steps)) for _ in range(n)],
        "compare, epoch vs epoch": [
            tb.route("compare", layer=LAYER, run_a=run, run_b=run, step_a=a, step_b=b, align="index")
            for run, a, b in ((rng.choice(RUNS), rng.choice(steps), rng.choice(steps)) for _ in range(n))
        ],
        "compare, run vs run (match)": [
            tb.route("compare", layer=LAYER, run_a=RUNS[0], run_b=RUNS[1], step_a=s, step_b=s, align="match")
            for s in (rng.choice(steps) for _ in range(n))
        ],
        # The detail panel: it reads every logged step for the history, so fewer requests.
        "filter (detail panel)": [
            tb.route("filter", run=rng.choice(RUNS), layer=LAYER, step=rng.choice(steps), filter=rng.randrange(FILTERS))
            for _ in range(max(5, n // 4))
        ],
    }


def paint_ms(tb: TensorBoard, steps: int) -> Optional[list[float]]:
    """Chromium's time to paint the 512-filter grid after each step's data arrived, or None without Chromium."""
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=chromium,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        page = browser.new_page(viewport={"width": 1440, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(f"{tb.url}/#convviz")
        frame = page.frame_locator('iframe[src*="name=convviz"]')
        slider = frame.locator("[data-testid=epoch-slider]")
        grid = frame.locator("[data-testid=filter-grid]")
        for i in range(steps):
            step = EPOCHS - 1 - 3 * i  # a step not seen before: fresh data, not the cache
            if i:
                slider.fill(str(step))
            frame.locator(f'[data-testid=filter-grid][data-step="{step}"][data-paint-ms]').wait_for()
            assert grid.get_attribute("data-filter-count") == str(FILTERS)
            out.append(float(grid.get_attribute("data-paint-ms")))
            # The next step's attribute must be fresh: clear this one.
            grid.evaluate("c => delete c.dataset.paintMs")
        browser.close()
    return out


def verdict(value: float, target: float) -> str:
    return "ok" if value <= target else "OVER"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--logdir", type=Path, help="where to write (or find) the bench logs")
    parser.add_argument("--keep", action="store_true", help="keep the logs after the run")
    parser.add_argument("--requests", type=int, default=40, help="requests per route (default 40)")
    parser.add_argument("--paints", type=int, default=8, help="grid paints to time (default 8)")
    parser.add_argument("--resnet-epochs", type=int, default=100,
                        help="epochs × 2 runs of the ResNet-18-shaped net for the memory check (0 skips; default 100)")
    parser.add_argument("--resnet-perturbations", action="store_true",
                        help="log the ResNet runs with perturbations (defaults) rather than without (faster to write)")
    args = parser.parse_args()

    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="convviz-bench-"))
    resnet_dir = logdir.with_name(logdir.name + "-resnet18")  # a sibling: not one of the 512-filter runs
    try:
        if not (logdir / RUNS[0]).exists():
            print(f"writing {len(RUNS)} runs × {EPOCHS} epochs of Conv2d(256, {FILTERS}, 3) to {logdir} …", flush=True)
            print(f"  {write_runs(logdir, BigLayer, (8, 256, 16, 16), EPOCHS, perturbations=False):.1f} s")
        size_mb = sum(f.stat().st_size for f in logdir.rglob("*") if f.is_file()) / 2**20
        print(f"logdir: {size_mb:.0f} MB\n")

        for label, extra in (("default loader", []), ("--load_fast=false", ["--load_fast=false"])):
            tb = TensorBoard(logdir, extra)
            try:
                print(f"tensorboard ({label}): all {EPOCHS} steps of both runs served after {tb.load_s:.1f} s")
                for route, urls in route_urls(tb, args.requests).items():
                    ms = latencies_ms(urls)
                    p50, p95 = p(ms, 50), p(ms, 95)
                    print(f"  {route:<30} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms   "
                          f"(target p50 ≤ {TARGET_ROUTE_P50_MS:.0f} ms: {verdict(p50, TARGET_ROUTE_P50_MS)})")
                if label == "default loader":
                    paints = paint_ms(tb, args.paints)
                    if paints is None:
                        print("  grid paint: skipped (chromium not installed)")
                    else:
                        print(f"  grid paint, {FILTERS} filters: p50 {p(paints, 50):.1f} ms   max {max(paints):.1f} ms   "
                              f"(target ≤ {TARGET_PAINT_MS:.0f} ms: {verdict(max(paints), TARGET_PAINT_MS)})")
                rss = tb.rss_mb()
                print(f"  RSS: {rss:.0f} MB   (target ≤ {TARGET_RSS_MB:.0f} MB: {verdict(rss, TARGET_RSS_MB)})\n")
            finally:
                tb.stop()
        if args.resnet_epochs > 0:
            resnet_memory(resnet_dir, args.resnet_epochs, args.resnet_perturbations)
    finally:
        if not args.keep and args.logdir is None:
            shutil.rmtree(logdir, ignore_errors=True)
            shutil.rmtree(resnet_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
