"""Caveats that analyses raise, routed to whoever runs them.

Analyses called from a notebook warn as usual. Under the callback they run in a worker thread,
where `warnings.catch_warnings` would swap process-wide state under the training thread's feet
(and could swallow the user's own warnings); instead the callback collects the caveats of its
own thread through a context variable and hands each distinct one to the user once.
"""
from __future__ import annotations

import contextlib
import contextvars
import warnings
from typing import Iterator, Optional

_collector: contextvars.ContextVar[Optional[list[str]]] = contextvars.ContextVar("tb_convviz_notices", default=None)


def notice(message: str) -> None:
    """Report a caveat: collected when a `collecting()` block is active in this thread, else warned."""
    sink = _collector.get()
    if sink is None:
        warnings.warn(message, UserWarning, stacklevel=3)
    else:
        sink.append(message)


@contextlib.contextmanager
def collecting() -> Iterator[list[str]]:
    """Collect this thread's notices into the yielded list instead of warning."""
    sink: list[str] = []
    token = _collector.set(sink)
    try:
        yield sink
    finally:
        _collector.reset(token)
