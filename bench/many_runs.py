"""TensorBoard's memory and first answers with many runs: records in sidecar files vs in events.

A sweep's logs (N runs × E epochs of the ResNet-18-shaped net's real records) are written twice:
as ConvViz writes them now (bulky records in a sidecar file per run, references in the events)
and as logs were written before sidecars (every record inside its event), then each is served by
a real TensorBoard under each loader (the default, Rust data server, and `--load_fast=false`),
next to TensorBoard on an empty logdir. Printed per case: RSS of TensorBoard's processes (the
data server included) once every run's every epoch is listed, seconds from start to the first
`/index` answer and from `/index` ready to the first `/layer` answer, and route p50.

The records are real: one ConvViz log of the net (112 px probe of 8 images, defaults) at a step
that keeps full kernels and at one that does not; the sweep repeats them, full kernels every 20th
epoch as ConvViz's `kernels_every` does. Goals (issue 18): 20 × 50 with RSS ≤ 1.5 × TensorBoard's
on an empty logdir, first `/layer` ≤ 2 s after `/index` is ready, route p50 ≤ 20 ms.

    .venv/bin/python bench/many_runs.py                 # 20 runs × 50 epochs
    .venv/bin/python bench/many_runs.py --runs 4 --epochs 10 --layouts sidecar
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from models import ResNet18Shaped  # noqa: E402
from tbserver import free_port  # noqa: E402
from tb_convviz import ConvViz, load  # noqa: E402
from tb_convviz.schema import format as fmt  # noqa: E402
from tb_convviz.schema import records  # noqa: E402
from tb_convviz.write.writer import RecordWriter  # noqa: E402

KERNELS_EVERY = 20
LAYOUTS = {"sidecar": True, "in events": False}
LOADERS = {"default": [], "--load_fast=false": ["--load_fast=false"]}


def real_records(folder: Path) -> tuple[list[tuple[str, str, bytes]], list[tuple[str, str, bytes]]]:
    """(records of a log keeping full kernels, of one that does not), as ConvViz wrote them."""
    torch.manual_seed(0)
    model = ResNet18Shaped()
    probe = (torch.randn(8, 3, 112, 112), torch.arange(8) % 10)
    with ConvViz(folder, probe=probe, kernels_every=2, background=False) as viz:
        viz.log(model, 0)
        viz.log(model, 1)
    logs = load(str(folder.parent))
    run = folder.name
    out: dict[int, list[tuple[str, str, bytes]]] = {0: [], 1: []}
    for layer, kinds in logs.layer_kinds(run).items():
        for kind in kinds:
            for datum in logs._series(run, layer, kind) if kind != fmt.KIND_COMMIT else []:
                out[datum.step].append((layer, kind, logs._record_bytes(run, datum)))
    return out[0], out[1]


def write_sweep(root: Path, runs: int, epochs: int, full: list, plain: list, sidecar: bool) -> int:
    """The sweep's logs in one layout; their size in bytes."""
    for r in range(runs):
        writer = RecordWriter(root / f"run{r:02d}", sidecar=sidecar)
        for epoch in range(epochs):
            chosen = full if epoch % KERNELS_EVERY == 0 else plain
            if epoch:
                chosen = [rec for rec in chosen if rec[1] != fmt.KIND_RUN]
            for layer, kind, payload in chosen:
                writer.write(layer, kind, epoch, payload)
            writer.write(fmt.RUN_LAYER, fmt.KIND_COMMIT, epoch, records.commit_record(len(chosen), None))
            writer.flush()
        writer.close()
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _get(url: str, timeout: float = 120.0) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


def _rss(proc: psutil.Process) -> int:
    """RSS of TensorBoard and its children (the Rust data server is one)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measure(logdir: Path, args: list[str], runs: int, epochs: int, layer: str, samples: int) -> dict:
    port = free_port()
    log = open(logdir.parent / f"tb-{port}.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
                             "--port", str(port), "--reload_interval=5", *args], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/data/plugin/convviz"
    out: dict = {}
    try:
        ps = psutil.Process(proc.pid)
        index = None
        while index is None:
            if proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited; see {log.name}")
            try:
                index = _get(base + "/index", timeout=5)
            except OSError:
                time.sleep(0.1)
        index_at = time.monotonic()
        out["first_index_s"] = index_at - started
        if runs:
            run0 = None
            while run0 is None:  # the first /layer a user can ask for: the first run listed with the layer
                found = [r for r in index["runs"] if any(lay["name"] == layer for lay in r["layers"])]
                if found:
                    run0 = found[0]["run"]
                    break
                time.sleep(0.05)
                index = _get(base + "/index")
            _get(f"{base}/layer?run={run0}&layer={layer}&step=0")
            out["first_layer_s"] = time.monotonic() - index_at
            deadline = time.monotonic() + 1800
            while True:  # loaded: every run's every epoch listed
                index = _get(base + "/index")
                done = [r for r in index["runs"] if r["layers"] and all(len(lay["steps"]) == epochs for lay in r["layers"])]
                if len(done) == runs or time.monotonic() > deadline:
                    break
                time.sleep(1)
            out["loaded_s"] = time.monotonic() - started
            time.sleep(2)
            out["rss_mb"] = _rss(ps) / 2**20
            timings: dict[str, list[float]] = {"layer": [], "table": [], "index": []}
            for i in range(samples):
                run, step = f"run{i % runs:02d}", (7 * i) % epochs
                for route, url in (("layer", f"{base}/layer?run={run}&layer={layer}&step={step}"),
                                   ("table", f"{base}/table?run={run}&layer={layer}&step={step}"),
                                   ("index", f"{base}/index")):
                    t = time.perf_counter()
                    _get(url)
                    timings[route].append(time.perf_counter() - t)
            out["p50_ms"] = {k: 1000 * statistics.median(v) for k, v in timings.items()}
            out["rss_after_routes_mb"] = _rss(ps) / 2**20
        else:
            time.sleep(3)
            out["rss_mb"] = _rss(ps) / 2**20
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--layouts", nargs="+", choices=sorted(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--layer", default="layer4.1.conv2", help="the layer whose routes are timed (512 filters)")
    parser.add_argument("--samples", type=int, default=20, help="requests per route for the p50")
    parser.add_argument("--keep", action="store_true", help="keep the logs (printed folder)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="many_runs_"))
    try:
        full, plain = real_records(work / "source" / "run")
        per_epoch = sum(len(p) for *_, p in plain) / 2**20
        print(f"records of one epoch: {per_epoch:.2f} MB, {sum(len(p) for *_, p in full) / 2**20:.2f} MB with full kernels")
        results: dict[str, dict] = {}
        empty = work / "empty" / "logs"
        empty.mkdir(parents=True)
        for loader, flags in LOADERS.items():
            results[f"empty logdir, {loader}"] = measure(empty, flags, 0, 0, args.layer, 0)
        for layout in args.layouts:
            root = work / layout.replace(" ", "_") / "logs"
            t = time.monotonic()
            size = write_sweep(root, args.runs, args.epochs, full, plain, LAYOUTS[layout])
            print(f"{layout}: {args.runs} runs × {args.epochs} epochs, {size / 2**30:.2f} GiB, written in {time.monotonic() - t:.0f} s")
            for loader, flags in LOADERS.items():
                results[f"{layout}, {loader}"] = measure(root, flags, args.runs, args.epochs, args.layer, args.samples)
                print(f"  {loader}: {json.dumps(results[f'{layout}, {loader}'], default=lambda x: round(x, 3))}")
        print()
        print(f"{'case':34} {'RSS MB':>8} {'× empty':>8} {'/index s':>9} {'→/layer s':>10} {'loaded s':>9} {'p50 layer/table/index ms':>26}")
        for case, r in results.items():
            loader = case.split(", ")[1]
            ratio = r["rss_mb"] / results[f"empty logdir, {loader}"]["rss_mb"]
            p50 = r.get("p50_ms")
            p50_text = "/".join(f"{p50[k]:.0f}" for k in ("layer", "table", "index")) if p50 else "-"
            print(f"{case:34} {r['rss_mb']:8.0f} {ratio:8.2f} {r['first_index_s']:9.1f} {r.get('first_layer_s', float('nan')):10.2f} "
                  f"{r.get('loaded_s', float('nan')):9.0f} {p50_text:>26}")
    finally:
        if args.keep:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
