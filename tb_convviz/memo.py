"""A small thread-safe LRU of values that depend only on their key, shared by the reader (filter
matchings keyed by the records they were solved on) and the plugin (route answers keyed by the
request and the runs' signatures): a key that names everything an answer read is never stale."""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable


class Memo:
    """At most `entries` values, least recently used first out."""

    def __init__(self, entries: int):
        self._entries = entries
        self._lock = threading.Lock()
        self._values: OrderedDict[tuple, Any] = OrderedDict()

    def get_or_compute(self, key: tuple, compute: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._values:
                self._values.move_to_end(key)
                return self._values[key]
        value = compute()
        with self._lock:
            self._values[key] = value
            while len(self._values) > self._entries:
                self._values.popitem(last=False)
        return value
