"""The one LRU of the package, for values that depend only on their key: the reader's filter matchings
(keyed by the records they were solved on), the plugin's route answers (keyed by the request and the
runs' signatures), its blobs (keyed by blob key and wall time) and its filter histories (valid for
one signature of their run). A key that names everything a value read is never stale."""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import Future
from typing import Callable, Generic, Hashable, Optional, TypeVar

V = TypeVar("V")


class Memo(Generic[V]):
    """At most `entries` values and at most `max_bytes` of them (by `size`), least recently used
    first out; a byte bound always keeps the newest value, even one larger than the bound alone.

    A value may be stored with a `version` (what it was computed from, such as a run's signature):
    a lookup with another version misses, and the new value replaces the old under the same key.

    Concurrent lookups of one missing (key, version) compute it once: the others wait for that
    value (or that failure), so identical requests to a busy dashboard share one solve.
    """

    def __init__(self, entries: Optional[int] = None, *, max_bytes: Optional[int] = None,
                 size: Optional[Callable[[V], int]] = None):
        if (max_bytes is None) != (size is None):
            raise ValueError("max_bytes and size go together")
        if entries is None and max_bytes is None:
            raise ValueError("a Memo needs a bound: entries, max_bytes or both")
        self._entries, self._max_bytes, self._size = entries, max_bytes, size
        self._lock = threading.Lock()
        self._values: OrderedDict[Hashable, tuple[Hashable, V]] = OrderedDict()
        self._pending: dict[tuple[Hashable, Hashable], Future] = {}
        self._total = 0

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: Hashable) -> bool:
        """Whether `key` holds a value (of any version); does not count as a use."""
        with self._lock:
            return key in self._values

    def get_or_compute(self, key: Hashable, compute: Callable[[], V], *, version: Hashable = None) -> V:
        """The value under `key` and `version`, computed (outside the lock) and kept when there is
        none; while it is being computed, other callers wait for it rather than compute it again."""
        with self._lock:
            hit = self._values.get(key)
            if hit is not None and hit[0] == version:
                self._values.move_to_end(key)
                return hit[1]
            pending = self._pending.get((key, version))
            owner = pending is None
            if owner:
                pending = self._pending[(key, version)] = Future()
        if not owner:
            return pending.result()
        try:
            value = compute()
        except BaseException as e:
            with self._lock:
                del self._pending[(key, version)]
            pending.set_exception(e)
            raise
        with self._lock:
            stale = self._values.pop(key, None)
            if stale is not None and self._size is not None:
                self._total -= self._size(stale[1])
            self._values[key] = (version, value)
            if self._size is not None:
                self._total += self._size(value)
            self._evict()
            del self._pending[(key, version)]
        pending.set_result(value)
        return value

    def _evict(self) -> None:
        while self._entries is not None and len(self._values) > self._entries or (
            self._max_bytes is not None and self._total > self._max_bytes and len(self._values) > 1
        ):
            _, (_, evicted) = self._values.popitem(last=False)
            if self._size is not None:
                self._total -= self._size(evicted)
