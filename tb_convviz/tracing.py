"""torch.fx traces of models, made once per model object and reused.

`fx.symbolic_trace` patches process-wide state while it runs (`nn.Module.__call__` among it): a
trace in the callback's worker thread would reroute the training thread's own forward passes
through the tracer. So the callback traces its model copy on the training thread, at the first
log, and the worker only ever finds the trace here.
"""
from __future__ import annotations

import threading
import weakref
from typing import Union

import torch.fx as fx
from torch import nn

_traces: "weakref.WeakKeyDictionary[nn.Module, Union[fx.GraphModule, Exception]]" = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def traced(model: nn.Module) -> fx.GraphModule:
    """The model's fx trace (its modules and parameters shared, not copied); raises what tracing
    raised, every time, for a model fx cannot trace."""
    with _lock:
        found = _traces.get(model)
        if found is None:
            try:
                found = fx.symbolic_trace(model)
            except Exception as e:  # noqa: BLE001 - fx raises many kinds (TraceError, TypeError, ...)
                found = e
            _traces[model] = found
    if isinstance(found, Exception):
        raise found
    return found
