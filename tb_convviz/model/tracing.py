"""torch.fx traces of models, made once per model object and structure, and reused.

`fx.symbolic_trace` patches process-wide state while it runs (`nn.Module.__call__` among it): any
forward pass another thread runs meanwhile goes through the tracer and fails ("module is not
installed as a submodule"). So a trace waits until no analysis of any ConvViz in the process is
running a model (`running_models`), and analyses wait while a trace runs. The callback traces its
model copy on the training thread, at the first log and whenever the copy is made again, so its
worker finds the trace here; a model whose modules or plain attributes changed is traced again.
"""
from __future__ import annotations

import contextlib
import threading
import weakref
from typing import Iterator, Union

import torch.fx as fx
from torch import nn

from tb_convviz.write.snapshot import structure

_traces: "weakref.WeakKeyDictionary[nn.Module, tuple[list, Union[fx.GraphModule, Exception]]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class _SharedOrAlone:
    """Many analyses at once, or one trace alone. A thread already running analyses may trace: it
    waits only for the other threads' analyses (inline logging traces inside its own analysis)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._running: dict[int, int] = {}  # thread id → analyses it is in
        self._tracing = False
        self._waiting = 0  # traces waiting: new analyses let them go first, or a busy process never traces

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            while (self._tracing or self._waiting) and not self._running.get(me):
                self._cond.wait()
            self._running[me] = self._running.get(me, 0) + 1
        try:
            yield
        finally:
            with self._cond:
                self._running[me] -= 1
                if not self._running[me]:
                    del self._running[me]
                self._cond.notify_all()

    @contextlib.contextmanager
    def alone(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            self._waiting += 1
            while self._tracing or any(t != me for t in self._running):
                self._cond.wait()
            self._waiting -= 1
            self._tracing = True
        try:
            yield
        finally:
            with self._cond:
                self._tracing = False
                self._cond.notify_all()


_models = _SharedOrAlone()


def running_models() -> contextlib.AbstractContextManager:
    """Hold while running models for an analysis: no trace patches the process meanwhile."""
    return _models.shared()


def traced(model: nn.Module) -> fx.GraphModule:
    """The model's fx trace (its modules and parameters shared, not copied); raises what tracing
    raised, every time, for a model fx cannot trace."""
    shape = structure(model)
    with _lock:
        found = _traces.get(model)
    if found is None or found[0] != shape:
        with _models.alone():  # not under `_lock`: an analysis we wait for may look a trace up
            with _lock:
                found = _traces.get(model)
            if found is None or found[0] != shape:
                try:
                    trace: Union[fx.GraphModule, Exception] = fx.symbolic_trace(model)
                except Exception as e:  # noqa: BLE001 - fx raises many kinds (TraceError, TypeError, ...)
                    trace = e
                found = (shape, trace)
                with _lock:
                    _traces[model] = found
    if isinstance(found[1], Exception):
        raise found[1]
    return found[1]
