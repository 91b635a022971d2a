"""Benchmark: how fast the CONVVIZ tab is on a big layer. Not a test: the numbers are what it prints.

Writes synthetic logs with the real ConvViz callback (one Conv2d(256, 512, 3) layer, 50 epochs,
2 runs; the weights take a random step each epoch), starts a real `tensorboard` on them and prints:

* p50/p95 latency of the `layer` route and of the `compare` route (epoch vs epoch and run vs run),
  and of the `filter` route behind the detail panel,
  once with TensorBoard's default loader (the Rust data server where it runs) and once with
  `--load_fast=false` (the Python multiplexer);
* the time Chromium takes to paint the 512-filter grid after the data arrived (the grid's own
  `data-paint-ms`: from the parsed JSON to the frame painted);
* TensorBoard's resident memory with that logdir loaded (its process tree: the Rust data server too);
* p50 of the similarity routes on that layer (`cka_epochs`, `cka_layers`, `cka_final`, and
  `embedding` with PCA), and each route's first, cold answer;
* run vs run: the first answer's time (the pairing solve, with its chance level), the p50 of
  slider moves after it (the pairing is kept), and `/index` p95 while 8 run-vs-run requests
  that each need a new solve (8 pair steps) are in flight, with how many of them were answered
  and how many told to retry (503).

Then a big net, 100 epochs × 2 runs (`--model`): TensorBoard's RSS with its logs loaded, both
loaders. With `--model resnet50` (ResNet-50-shaped, 1000 classes, 53 conv layers, logged with
perturbations=False on an 8-image 64 px probe) also the layer, compare and filter routes and the
grid paint on its 2048-filter layer (`layer4.2.conv3`).

    /work/venv/bin/python bench/dashboard.py                 # logs in a temp dir, removed after
    /work/venv/bin/python bench/dashboard.py --logdir /tmp/cvz-bench --keep   # reuse them next time
    /work/venv/bin/python bench/dashboard.py --skip-big-layer --model resnet50   # only the ResNet-50 part
    /work/venv/bin/python bench/dashboard.py --skip-big-layer --model resnet50 --routes filter --paints 0   # one route
"""
from __future__ import annotations

import argparse
import json
import threading
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.models import ResNet18Shaped, ResNet50Shaped, perturb_weights  # noqa: E402
from tb_convviz import ConvViz  # noqa: E402

TARGET_ROUTE_P50_MS = 20.0
TARGET_PAINT_MS = 300.0
TARGET_RSS_MB = 1024.0
TARGET_SIMILARITY_P50_MS = 50.0
TARGET_INDEX_P95_MS = 100.0
IN_FLIGHT = 8
PREFETCH_S = 3.0

EPOCHS = 50
RUNS = ("run_a", "run_b")
LAYER = "conv"
FILTERS = 512


@dataclass(frozen=True)
class Logs:
    """What a bench logdir holds: the layer the routes and the grid are timed on, its filters, the epochs."""

    layer: str
    filters: int
    epochs: int


@dataclass(frozen=True)
class Net:
    """A big net to load into TensorBoard; `layer` (its widest conv) also gets routes and paint timed."""

    title: str
    make: Callable[[], nn.Module]
    probe_shape: tuple[int, ...]
    layer: Optional[str] = None
    filters: int = 0


NETS = {
    "resnet18": Net("ResNet-18-shaped", ResNet18Shaped, (8, 3, 112, 112)),
    "resnet50": Net("ResNet-50-shaped (1000 classes)", lambda: ResNet50Shaped(classes=1000), (8, 3, 64, 64),
                    layer="layer4.2.conv3", filters=2048),
}


LOADERS = {"default loader": [], "--load_fast=false": ["--load_fast=false"]}


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
    """`epochs` × 2 runs of `make_model()` on one probe (runs are compared filter by filter only on
    the same probe), every weight stepping a little each epoch (a stand-in for training); returns
    the seconds it took."""
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(0)
    probe = (torch.randn(*probe_shape, generator=generator), torch.randint(0, 10, (probe_shape[0],), generator=generator))
    for seed, run in enumerate(RUNS):
        torch.manual_seed(seed)
        model = make_model()
        with ConvViz(str(logdir / run), probe=probe, perturbations=perturbations) as viz:
            for epoch in range(epochs):
                perturb_weights(list(model.parameters()))
                viz.log(model, epoch, final=epoch == epochs - 1)
    return time.perf_counter() - start


def big_net(logdir: Path, net: Net, epochs: int, perturbations: bool, requests: int, paints: int, loaders: list[str],
            routes: Optional[list[str]] = None) -> None:
    """TensorBoard's RSS, both loaders, with `epochs` × 2 runs of `net` loaded; the routes (those
    named in `routes`, when given) and the grid paint on `net.layer` when it names one."""
    if not (logdir / RUNS[0]).exists():
        what = "defaults" if perturbations else "perturbations=False"
        print(f"writing {len(RUNS)} runs × {epochs} epochs of the {net.title} net, {what}, "
              f"probe {net.probe_shape}, to {logdir} …", flush=True)
        print(f"  {write_runs(logdir, net.make, net.probe_shape, epochs, perturbations):.1f} s")
    size_mb = sum(f.stat().st_size for f in logdir.rglob("*") if f.is_file()) / 2**20
    print(f"logdir: {size_mb:.0f} MB")
    for label, extra in LOADERS.items():
        if label not in loaders:
            continue
        tb = TensorBoard(logdir, extra, epochs=epochs)
        try:
            print(f"  tensorboard ({label}): loaded in {tb.load_s:.1f} s")
            if net.layer is not None:
                logs = Logs(net.layer, net.filters, epochs)
                if routes is None or "compare" in routes:
                    report_run_vs_run(tb, requests, logs)
                time_routes(tb, chosen(route_urls(tb, requests, logs), routes), TARGET_ROUTE_P50_MS)
                if label == "default loader" and paints > 0:
                    report_paint(tb, paints, logs)
            rss = tb.rss_mb()
            print(f"    RSS {rss:.0f} MB   (target ≤ {TARGET_RSS_MB:.0f} MB: {verdict(rss, TARGET_RSS_MB)})")
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
    return timed_ms(urls)


def timed_ms(urls: list[str]) -> list[float]:
    out = []
    for url in urls:
        t = time.perf_counter()
        get(url)
        out.append((time.perf_counter() - t) * 1000)
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] if len(values) > 1 else values[0]


def route_urls(tb: TensorBoard, n: int, logs: Logs) -> dict[str, list[str]]:
    rng = random.Random(0)
    steps = range(logs.epochs)
    return {
        "layer": [tb.route("layer", run=rng.choice(RUNS), layer=logs.layer, step=rng.choice(steps)) for _ in range(n)],
        "compare, epoch vs epoch": [
            tb.route("compare", layer=logs.layer, run_a=run, run_b=run, step_a=a, step_b=b, align="index")
            for run, a, b in ((rng.choice(RUNS), rng.choice(steps), rng.choice(steps)) for _ in range(n))
        ],
        "compare, run vs run (match)": [
            tb.route("compare", layer=logs.layer, run_a=RUNS[0], run_b=RUNS[1], step_a=s, step_b=s, align="match")
            for s in (rng.choice(steps) for _ in range(n))
        ],
        # The detail panel: a run's first request reads every logged step of the layer for the
        # history (later ones slice the plugin's cached columns), so fewer requests.
        "filter (detail panel)": [
            tb.route("filter", run=rng.choice(RUNS), layer=logs.layer, step=rng.choice(steps), filter=rng.randrange(logs.filters))
            for _ in range(max(5, n // 4))
        ],
    }


def chosen(routes: dict[str, list[str]], names: Optional[list[str]]) -> dict[str, list[str]]:
    """The routes whose label starts with one of `names` (all when None): time one route on big logs
    without waiting for the others."""
    return routes if names is None else {r: urls for r, urls in routes.items() if r.startswith(tuple(names))}


def similarity_urls(tb: TensorBoard, n: int, logs: Logs) -> dict[str, list[str]]:
    """The CKA heatmaps' and the filter map's routes. Per run, `cka_epochs`, `cka_final` and
    `embedding` have one answer each, so most of their requests repeat an answer already given."""
    rng = random.Random(1)
    steps = range(logs.epochs)
    return {
        "cka_epochs": [tb.route("cka_epochs", run=rng.choice(RUNS), layer=logs.layer) for _ in range(n)],
        "cka_layers": [
            tb.route("cka_layers", run_a=rng.choice(RUNS), step_a=rng.choice(steps), run_b=rng.choice(RUNS), step_b=rng.choice(steps))
            for _ in range(n)
        ],
        "cka_final": [tb.route("cka_final", run=rng.choice(RUNS)) for _ in range(n)],
        "embedding, pca": [tb.route("embedding", run=rng.choice(RUNS), layer=logs.layer, method="pca") for _ in range(n)],
    }


def time_routes(tb: TensorBoard, routes: dict[str, list[str]], target_ms: float, warm: bool = True) -> None:
    """Print each route's p50/p95 against `target_ms`. Not `warm`: no warm-up request, and the
    slowest first answer of each distinct URL (the cold one a user waits for) is printed too."""
    for route, urls in routes.items():
        if warm:
            ms, cold = latencies_ms(urls), ""
        else:
            ms = timed_ms(urls)
            firsts = [t for i, (url, t) in enumerate(zip(urls, ms)) if url not in urls[:i]]
            cold = f"   first answers max {max(firsts):8.1f} ms ({len(firsts)} distinct)"
        p50, p95 = p(ms, 50), p(ms, 95)
        print(f"    {route:<30} p50 {p50:8.1f} ms   p95 {p95:8.1f} ms{cold}   "
              f"(target p50 ≤ {target_ms:.0f} ms: {verdict(p50, target_ms)})")


def report_run_vs_run(tb: TensorBoard, n: int, logs: Logs) -> None:
    """Run vs run as a user meets it: the first answer (solving the pairing), then slider moves,
    which keep that pairing; then `/index` while IN_FLIGHT requests each needing a solve of their
    own (other pair steps) are in flight."""
    rng = random.Random(2)
    steps = range(logs.epochs)

    def url(step: int, pair_step: Optional[int] = None) -> str:
        extra = {} if pair_step is None else {"pair_step": pair_step}
        return tb.route("compare", layer=logs.layer, run_a=RUNS[0], run_b=RUNS[1], step_a=step, step_b=step, align="match", **extra)

    first_ms = timed_ms([url(logs.epochs - 1)])[0]
    time.sleep(PREFETCH_S)  # a user reads the first answer while the plugin warms the other steps' records
    moves = timed_ms([url(rng.choice(steps)) for _ in range(n)])
    print(f"    run vs run: first answer (pairing solve + chance) {first_ms:8.1f} ms;   slider moves p50 {p(moves, 50):8.1f} ms   "
          f"p95 {p(moves, 95):8.1f} ms   (target p50 ≤ {TARGET_ROUTE_P50_MS:.0f} ms: {verdict(p(moves, 50), TARGET_ROUTE_P50_MS)})")
    # Each needs its own solve: a pair step other than the last (solved already) and the others'.
    pair_steps = rng.sample(range(logs.epochs - 1), min(IN_FLIGHT, logs.epochs - 1))
    statuses: list[int] = []
    done = threading.Event()

    def fetch(u: str) -> None:
        try:
            get(u)
            statuses.append(200)
        except urllib.error.HTTPError as e:
            statuses.append(e.code)

    index_url = f"{tb.url}/data/plugin/convviz/index"
    idle = timed_ms([index_url] * 20)  # the same route with nothing in flight, for comparison
    index_ms = []
    with ThreadPoolExecutor(len(pair_steps)) as pool:
        futures = [pool.submit(fetch, url(s, pair_step=s)) for s in pair_steps]
        threading.Thread(target=lambda: ([f.result() for f in futures], done.set()), daemon=True).start()
        while not done.is_set() or len(index_ms) < 5:
            index_ms.extend(timed_ms([index_url]))
    p95 = p(index_ms, 95)
    print(f"    /index with {len(pair_steps)} run-vs-run solves in flight: p95 {p95:8.1f} ms over {len(index_ms)} requests   "
          f"(target ≤ {TARGET_INDEX_P95_MS:.0f} ms: {verdict(p95, TARGET_INDEX_P95_MS)}; idle p95 {p(idle, 95):.1f} ms);   "
          f"those requests: {statuses.count(200)} answered, {statuses.count(503)} told to retry (503)")


def report_paint(tb: TensorBoard, paints: int, logs: Logs) -> None:
    ms = paint_ms(tb, paints, logs)
    if ms is None:
        print("    grid paint: skipped (chromium not installed)")
    else:
        print(f"    grid paint, {logs.filters} filters ({logs.layer}): p50 {p(ms, 50):.1f} ms   max {max(ms):.1f} ms   "
              f"(target ≤ {TARGET_PAINT_MS:.0f} ms: {verdict(max(ms), TARGET_PAINT_MS)})")


def paint_ms(tb: TensorBoard, steps: int, logs: Logs) -> Optional[list[float]]:
    """Chromium's time to paint `logs.layer`'s grid after each step's data arrived, or None without Chromium."""
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
        page.goto(f"{tb.url}/#convviz&cvz.view=filters")  # the tab opens on Findings otherwise
        frame = page.frame_locator('iframe[src*="name=convviz"]')
        slider = frame.locator("[data-testid=epoch-slider]")
        grid = frame.locator("[data-testid=filter-grid]")
        picker = frame.locator("[data-testid=layer-picker]")
        picker.wait_for()
        if picker.input_value() != logs.layer:
            picker.select_option(logs.layer)
        for i in range(steps):
            step = logs.epochs - 1 - 3 * i  # a step not seen before: fresh data, not the cache
            if i:
                slider.fill(str(step))
            frame.locator(f'[data-testid=filter-grid][data-layer="{logs.layer}"][data-step="{step}"][data-paint-ms]').wait_for()
            assert grid.get_attribute("data-filter-count") == str(logs.filters)
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
    parser.add_argument("--paints", type=int, default=8, help="grid paints to time (default 8; 0 skips them)")
    parser.add_argument("--routes", nargs="+", metavar="NAME",
                        help="time only the big net's routes whose label starts with one of these "
                             "(layer, compare, filter); default all")
    parser.add_argument("--model", choices=sorted(NETS), default="resnet18",
                        help="the big net: resnet18 (memory only) or resnet50 (memory, and routes and paint on its "
                             "2048-filter layer); default resnet18")
    parser.add_argument("--resnet-epochs", type=int, default=100,
                        help="epochs × 2 runs of the big net (0 skips; default 100)")
    parser.add_argument("--resnet-perturbations", action="store_true",
                        help="log the big net with perturbations (defaults) rather than without (faster to write)")
    parser.add_argument("--big-net-default-loader-only", action="store_true",
                        help="load the big net's logs with the default loader only (the Python one is slow on them)")
    parser.add_argument("--skip-big-layer", action="store_true", help="skip the Conv2d(256, 512, 3) part")
    args = parser.parse_args()

    logdir = args.logdir or Path(tempfile.mkdtemp(prefix="convviz-bench-"))
    net_dir = logdir.with_name(f"{logdir.name}-{args.model}")  # a sibling: not one of the 512-filter runs
    logs = Logs(LAYER, FILTERS, EPOCHS)
    try:
        if not args.skip_big_layer:
            if not (logdir / RUNS[0]).exists():
                print(f"writing {len(RUNS)} runs × {EPOCHS} epochs of Conv2d(256, {FILTERS}, 3) to {logdir} …", flush=True)
                print(f"  {write_runs(logdir, BigLayer, (8, 256, 16, 16), EPOCHS, perturbations=False):.1f} s")
            size_mb = sum(f.stat().st_size for f in logdir.rglob("*") if f.is_file()) / 2**20
            print(f"logdir: {size_mb:.0f} MB\n")
            for label, extra in LOADERS.items():
                tb = TensorBoard(logdir, extra)
                try:
                    print(f"tensorboard ({label}): all {EPOCHS} steps of both runs served after {tb.load_s:.1f} s")
                    report_run_vs_run(tb, args.requests, logs)
                    time_routes(tb, route_urls(tb, args.requests, logs), TARGET_ROUTE_P50_MS)
                    time_routes(tb, similarity_urls(tb, args.requests, logs), TARGET_SIMILARITY_P50_MS, warm=False)
                    if label == "default loader" and args.paints > 0:
                        report_paint(tb, args.paints, logs)
                    rss = tb.rss_mb()
                    print(f"    RSS: {rss:.0f} MB   (target ≤ {TARGET_RSS_MB:.0f} MB: {verdict(rss, TARGET_RSS_MB)})\n")
                finally:
                    tb.stop()
        if args.resnet_epochs > 0:
            big_net(net_dir, NETS[args.model], args.resnet_epochs, args.resnet_perturbations, args.requests, args.paints,
                    list(LOADERS)[:1] if args.big_net_default_loader_only else list(LOADERS), args.routes)
    finally:
        if not args.keep and args.logdir is None:
            shutil.rmtree(logdir, ignore_errors=True)
            shutil.rmtree(net_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
