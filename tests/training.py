"""Logs written the way a user writes them: plain SGD steps on a tiny net, then the real ConvViz
callback, for the tests that read logs back through TensorBoard (test_routes.py, browser/)."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import nn

from tb_convviz import ConvViz

Batches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]


def sgd_step(model: nn.Module, inputs: torch.Tensor, labels: torch.Tensor, lr: float) -> None:
    """One plain SGD step on the cross-entropy of `model(inputs)` against `labels`.

    Written out rather than taken from torch.optim, whose first use imports torch._dynamo (seconds).
    """
    model.zero_grad()
    nn.functional.cross_entropy(model(inputs), labels).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad


def train_and_log(
    logdir: Path, model: nn.Module, probe: Any, batches: Batches, steps: Iterable[int], *, lr: float, **options: Any
) -> None:
    """For each of `steps`: an SGD step on each (inputs, labels) of `batches()`, then `ConvViz.log`.
    `probe` and `options` go to ConvViz."""
    with ConvViz(str(logdir), probe=probe, **options) as viz:
        for step in steps:
            for inputs, labels in batches():
                sgd_step(model, inputs, labels, lr)
            viz.log(model, step)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """torch on one thread while logging tiny nets: more threads only contend (100x slower on 2 busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
