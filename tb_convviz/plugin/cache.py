"""A caching view of TensorBoard's data provider for the dashboard's routes.

Each call to the Rust data server costs ~40 ms whatever its size (seen here with 2.21: its gRPC
replies wait on Nagle's algorithm), and one dashboard answer needs several calls: the listings,
a run's series and, for format-1 logs, a few blobs. So listings and series are reused for a few
seconds (TensorBoard itself reloads every 5 s by default), then for up to `STALE_S` more while a
background call brings them up to date, and a route asking for one run's listing is served from
the tab's last listing of every run; one call fetches the series of every tag of a
run (format 2 holds each step's groups of references in it, `schema.groups`: no further call);
and blobs, which never change under a given key and wall time, stay in a byte-bounded LRU.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Optional

from tensorboard.data import provider as tb_provider

from tb_convviz.read.memo import Memo

_logger = logging.getLogger(__name__)

LISTING_TTL_S = 3.0
# A listing or series older than the TTL but younger than this is answered at once while one
# background call brings it up to date: the tab's /index of a sweep then never waits on
# TensorBoard converting every event of every run (~0.5 s for 20 runs × 50 epochs).
STALE_S = 30.0
_REFRESHERS = 4  # background calls at once: each mostly waits on the data server
BLOB_CACHE_BYTES = 256 * 1024 * 1024
ANSWER_CACHE_ENTRIES = 64  # a few MB at most: the largest answers (filter maps of 2048 filters × 100 epochs) are ~2 MB


class CachingProvider:
    """Implements the DataProvider calls the reader makes, over `inner`, with caching."""

    def __init__(self, inner: tb_provider.DataProvider, ttl_s: float = LISTING_TTL_S, blob_bytes: int = BLOB_CACHE_BYTES,
                 stale_s: float = STALE_S):
        self._inner = inner
        self._ttl = ttl_s
        self._stale = max(stale_s, ttl_s)
        self._lock = threading.Lock()
        self._refreshing: set[tuple] = set()
        self._refresher: Optional[ThreadPoolExecutor] = None
        self._listings: dict[tuple, tuple[float, Any]] = {}
        self._run_series: dict[tuple, tuple[float, dict]] = {}
        # Keyed by (blob key, wall time): a rewritten step (a restarted run) keeps its blob key but not its wall time.
        self._blobs: Memo[bytes] = Memo(max_bytes=blob_bytes, size=len)
        self._wall_time: dict[str, float] = {}

    def _cached(self, cache: dict, key: tuple, call: Callable[[], Any]) -> Optional[Any]:
        """What `cache` holds under `key` if it may be answered: younger than the TTL, or younger
        than `stale_s` while a background `call` brings it up to date; else None."""
        with self._lock:
            hit = cache.get(key)
        age = time.monotonic() - hit[0] if hit is not None else math.inf
        if age >= self._stale:
            return None
        if age >= self._ttl:
            self._refresh(cache, key, call)
        return hit[1]

    def _get(self, cache: dict, key: tuple, call: Callable[[], Any]) -> Any:
        found = self._cached(cache, key, call)
        return found if found is not None else self._store(cache, key, call())

    def _refresh(self, cache: dict, key: tuple, call: Callable[[], Any]) -> None:
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(_REFRESHERS, thread_name_prefix="convviz-refresh")

        def refresh() -> None:
            try:
                self._store(cache, key, call())
            except Exception as e:  # noqa: BLE001 - the next request past `stale_s` calls again, and says why
                _logger.warning("convviz: refreshing a listing failed (%s: %s)", type(e).__name__, e)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        self._refresher.submit(refresh)

    def _store(self, cache: dict, key: tuple, value: Any) -> Any:
        with self._lock:
            cache[key] = (time.monotonic(), value)
        return value

    def list_blob_sequences(self, ctx=None, *, experiment_id, plugin_name, run_tag_filter=None):
        return self._listing("list_blob_sequences", ctx, experiment_id, plugin_name, run_tag_filter)

    def list_tensors(self, ctx=None, *, experiment_id, plugin_name, run_tag_filter=None):
        return self._listing("list_tensors", ctx, experiment_id, plugin_name, run_tag_filter)

    def read_blob_sequences(self, ctx=None, *, experiment_id, plugin_name, downsample=None, run_tag_filter=None):
        """Served from one cached read of all tags of each requested run."""
        return self._read("read_blob_sequences", ctx, experiment_id, plugin_name, downsample, run_tag_filter)

    def read_tensors(self, ctx=None, *, experiment_id, plugin_name, downsample=None, run_tag_filter=None):
        """Served from one cached read of all tags of each requested run."""
        return self._read("read_tensors", ctx, experiment_id, plugin_name, downsample, run_tag_filter)

    def _listing(self, method: str, ctx, experiment_id, plugin_name, run_tag_filter) -> dict:
        """A listing; one of some runs is cut from a fresh listing of every run when there is one
        (the tab lists every run each few seconds: a route then lists nothing anew)."""
        runs = tuple(sorted(run_tag_filter.runs)) if run_tag_filter is not None and run_tag_filter.runs else None

        def call(where: Optional[tb_provider.RunTagFilter]) -> Callable[[], dict]:
            return lambda: getattr(self._inner, method)(ctx, experiment_id=experiment_id, plugin_name=plugin_name, run_tag_filter=where)

        if runs is not None:
            everything = self._cached(self._listings, (method, experiment_id, plugin_name, None), call(None))
            if everything is not None:
                return {run: everything[run] for run in runs if run in everything}
        return self._get(self._listings, (method, experiment_id, plugin_name, runs), call(run_tag_filter))

    def _read(self, method: str, ctx, experiment_id, plugin_name, downsample, run_tag_filter) -> dict:
        result: dict[str, dict] = {}
        for run in run_tag_filter.runs if run_tag_filter is not None and run_tag_filter.runs else ():
            def call(run: str = run) -> dict:
                series = getattr(self._inner, method)(
                    ctx, experiment_id=experiment_id, plugin_name=plugin_name, downsample=downsample,
                    run_tag_filter=tb_provider.RunTagFilter(runs=[run]),
                ).get(run, {})
                if method == "read_blob_sequences":
                    with self._lock:
                        for datums in series.values():
                            for d in datums:
                                for ref in d.values:
                                    self._wall_time[ref.blob_key] = d.wall_time
                return series

            series = self._get(self._run_series, (method, experiment_id, plugin_name, run, downsample), call)
            tags = run_tag_filter.tags
            result[run] = {t: s for t, s in series.items() if tags is None or t in tags}
        return result

    def read_blob(self, ctx=None, *, blob_key: str) -> bytes:
        with self._lock:
            key = (blob_key, self._wall_time.get(blob_key))
        return self._blobs.get_or_compute(key, lambda: self._inner.read_blob(ctx, blob_key=blob_key))


class AnswerCache(Memo):
    """Route answers that take real work (pairing thousands of filters, CKA over every epoch, filter
    maps), kept under the request and the signature of the runs they read: a new epoch changes the
    key, so an answer is never stale, and moving back and forth between views costs nothing."""

    def __init__(self, entries: int = ANSWER_CACHE_ENTRIES):
        super().__init__(entries)
