"""What both demos share: the training loop with ConvViz in it, evaluation, and serving TensorBoard.

The lines a user copies into their own loop are in `fit`: build a `ConvViz` with a fixed
probe batch, call `viz.log(model, epoch)` once per epoch (``final=True`` on the last one),
and close it.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from tb_convviz import ConvViz

PROBE_SIZE = 16  # fixed test examples every epoch is measured on

R = TypeVar("R")  # what a demo's train returns per run


@dataclass
class Split:
    """Inputs (N, C, *spatial) float32 and integer labels (N,)."""

    x: torch.Tensor
    y: torch.Tensor


@dataclass
class RunResult:
    run: str
    logdir: str
    test_accuracy: float
    seconds: float


def accuracy(model: nn.Module, data: Split, batch_size: int = 512) -> float:
    """Fraction of `data` classified correctly, in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data.y), batch_size):
            correct += (model(data.x[i : i + batch_size]).argmax(1) == data.y[i : i + batch_size]).sum().item()
    model.train(was_training)
    return correct / len(data.y)


def fit(
    model: nn.Module,
    train: Split,
    test: Split,
    run_dir: str,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    weight_decay: float = 0.0,
    probe: Optional[tuple[torch.Tensor, torch.Tensor]] = None,
    convviz_options: Optional[Mapping[str, Any]] = None,
    report: Optional[Callable[[nn.Module], str]] = None,
    log: Callable[[str], None] = print,
) -> float:
    """Train with Adam and a cosine schedule, logging every conv filter to `run_dir` each epoch.

    Step 0 logs the untrained filters, so "drift from first" in the dashboard means drift
    from initialization. `probe` (images, labels) defaults to the first 16 test examples;
    `convviz_options` are passed on to `ConvViz` (e.g. counterfactuals, impact); `report(model)`
    returns extra text for each epoch's line. Returns the final test accuracy.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = -(-len(train.y) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    if probe is None:
        probe = (test.x[:PROBE_SIZE], test.y[:PROBE_SIZE])
    acc = accuracy(model, test)
    with ConvViz(run_dir, probe=probe, **(convviz_options or {})) as viz:
        viz.log(model, 0)
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            model.train()
            total_loss = 0.0
            order = torch.randperm(len(train.y), generator=generator)
            for i in range(0, len(order), batch_size):
                idx = order[i : i + batch_size]
                loss = F.cross_entropy(model(train.x[idx]), train.y[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                total_loss += loss.item() * len(idx)
            train_seconds = time.perf_counter() - start
            viz.log(model, epoch, final=epoch == epochs)
            log_seconds = time.perf_counter() - start - train_seconds
            acc = accuracy(model, test)
            extra = f"  {report(model)}" if report is not None else ""
            log(
                f"  epoch {epoch:3d}/{epochs}  loss {total_loss / len(train.y):.4f}  test acc {acc:6.2%}{extra}  "
                f"train {train_seconds:5.2f}s  convviz log {log_seconds:4.2f}s"
            )
    return acc


def run_name(seed: int) -> str:
    return f"seed{seed}"


def train_runs(
    build_model: Callable[[], nn.Module],
    train: Split,
    test: Split,
    logdir: str,
    *,
    runs: int,
    seed: int,
    log: Callable[[str], None] = print,
    **fit_args,
) -> list[RunResult]:
    """Train `runs` copies of the model from seeds seed, seed+1, …, each logged to `logdir/seed<k>`.

    Same architecture, different initial filters: the dashboard's run-vs-run comparison
    (with filter matching) then shows which filters the runs converge to alike.
    """
    results = []
    for k in range(runs):
        s = seed + k
        torch.manual_seed(s)
        model = build_model()
        run_dir = os.path.join(logdir, run_name(s))
        replaced = clear_previous_run(run_dir)
        log(f"run {run_name(s)} -> {run_dir}" + (f" (replacing {replaced} earlier event file(s))" if replaced else ""))
        start = time.perf_counter()
        acc = fit(model, train, test, run_dir, seed=s, log=log, **fit_args)
        results.append(RunResult(run_name(s), run_dir, acc, time.perf_counter() - start))
        log(f"run {run_name(s)}: test accuracy {acc:.2%} in {results[-1].seconds:.1f}s")
    return results


def demo_parser(description: str, example: str, probe: str = "16 fixed test examples") -> argparse.ArgumentParser:
    """A parser whose help says what the demo does, what it writes and where to look."""
    return argparse.ArgumentParser(
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            "Each run is logged to LOGDIR/seed<k>: every conv layer's kernels (raw and BatchNorm-folded),\n"
            "per-filter statistics and drift, and activations on the probe (maps of its first 4 images)\n"
            f"at step 0 (initialization) and after every epoch. The probe: {probe}.\n"
            "Unless --no-serve, TensorBoard then serves LOGDIR on http://127.0.0.1:PORT/#convviz until\n"
            "Ctrl-C; to look again later, run `tensorboard --logdir LOGDIR`.\n\n"
            f"Example:\n  {example}"
        ),
    )


def clear_previous_run(run_dir: str) -> int:
    """Delete event files an earlier demo run left in `run_dir`, so steps 0..N are not logged twice."""
    if not os.path.isdir(run_dir):
        return 0
    old = [f for f in os.listdir(run_dir) if f.startswith("events.out.tfevents.")]
    for f in old:
        os.remove(os.path.join(run_dir, f))
    return len(old)


def add_common_arguments(parser: argparse.ArgumentParser, *, epochs: int, logdir: str, runs: int = 2) -> None:
    parser.add_argument("--epochs", type=int, default=epochs, help="training epochs per run (default: %(default)s)")
    parser.add_argument(
        "--runs",
        type=int,
        default=runs,
        help="runs to train, with seeds SEED, SEED+1, ... so run-vs-run comparison has something to show "
        "(default: %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first run (default: %(default)s)")
    parser.add_argument("--logdir", default=logdir, help="where the runs are written (default: %(default)s)")
    parser.add_argument("--no-serve", action="store_true", help="train and log only; do not start TensorBoard")
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"TensorBoard port on 127.0.0.1 (default: {DEFAULT_PORT}, or a free one when another server holds it)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads; models this small train fastest on one, more threads mostly "
        "add synchronization, badly so on a busy machine (default: %(default)s)",
    )


def check_common_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("epochs", "runs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with `n` torch CPU threads, then restore the caller's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


DEFAULT_PORT = 6006  # TensorBoard's own


def port_to_serve(asked: Optional[int]) -> int:
    """The port asked for; without one, TensorBoard's 6006, or a free port the system picks when
    6006 is taken (another demo still serving it), said on stdout so the printed URL is no surprise."""
    if asked is not None:
        return asked
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as probe:
        try:
            probe.bind(("127.0.0.1", DEFAULT_PORT))
            return DEFAULT_PORT
        except OSError:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    print(f"Port {DEFAULT_PORT} is taken (another TensorBoard still serving?): using {port}; --port picks one.", flush=True)
    return port


def launch(logdir: str, port: int) -> str:
    """Start TensorBoard over `logdir` on 127.0.0.1:`port` in this process's background; its base URL."""
    from tensorboard import program

    board = program.TensorBoard()
    board.configure(argv=[None, "--logdir", os.path.abspath(logdir), "--host", "127.0.0.1", "--port", str(port)])
    return board.launch().rstrip("/")


def serve(logdir: str, port: int, wait: Optional[float] = None) -> str:
    """Start TensorBoard on 127.0.0.1:`port` over `logdir`, print the CONVVIZ URL, block until Ctrl-C.

    `wait` (seconds) returns early instead of blocking, for scripted checks.
    """
    url = launch(logdir, port) + "/#convviz"
    print(f"\nTensorBoard is serving {logdir} at\n\n    {url}\n\nPress Ctrl-C to stop.", flush=True)
    try:
        time.sleep(wait) if wait is not None else _sleep_forever()
    except KeyboardInterrupt:
        print("stopped")
    return url


def run_demo(args: argparse.Namespace, train: Callable[..., list[R]], **options: Any) -> list[R]:
    """A demo's main once its arguments are parsed: `train(logdir, epochs, runs, seed, **options)`
    under --threads torch threads, then serve the logdir unless --no-serve; returns train's results.
    """
    with torch_threads(args.threads):
        results = train(args.logdir, epochs=args.epochs, runs=args.runs, seed=args.seed, **options)
    if not args.no_serve:
        serve(args.logdir, port_to_serve(args.port))
    return results


def _sleep_forever() -> None:
    while True:
        time.sleep(3600)
