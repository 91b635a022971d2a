"""A caching view of TensorBoard's data provider for the dashboard's routes.

Each call to the Rust data server costs ~40 ms whatever its size (seen here with 2.21: its gRPC
replies wait on Nagle's algorithm), and one dashboard answer needs several calls: the listings,
a run's series and, for format-1 logs, a few blobs. So listings are reused for a few seconds
(TensorBoard itself reloads every 5 s by default), and a route asking for one run's listing is
served from the tab's last listing of every run; one call fetches the series of every tag of a
run (format 2 holds each step's groups of references in it, `schema.groups`: no further call);
and blobs, which never change under a given key and wall time, stay in a byte-bounded LRU.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Optional

from tensorboard.data import provider as tb_provider

from tb_convviz.read.memo import Memo


LISTING_TTL_S = 3.0
BLOB_CACHE_BYTES = 256 * 1024 * 1024
ANSWER_CACHE_ENTRIES = 64  # a few MB at most: the largest answers (filter maps of 2048 filters × 100 epochs) are ~2 MB


class CachingProvider:
    """Implements the DataProvider calls the reader makes, over `inner`, with caching."""

    def __init__(self, inner: tb_provider.DataProvider, ttl_s: float = LISTING_TTL_S, blob_bytes: int = BLOB_CACHE_BYTES):
        self._inner = inner
        self._ttl = ttl_s
        self._lock = threading.Lock()
        self._listings: dict[tuple, tuple[float, Any]] = {}
        self._run_series: dict[tuple, tuple[float, dict]] = {}
        # Keyed by (blob key, wall time): a rewritten step (a restarted run) keeps its blob key but not its wall time.
        self._blobs: Memo[bytes] = Memo(max_bytes=blob_bytes, size=len)
        self._wall_time: dict[str, float] = {}

    def _fresh(self, cache: dict, key: tuple) -> Optional[Any]:
        with self._lock:
            hit = cache.get(key)
        if hit is not None and time.monotonic() - hit[0] < self._ttl:
            return hit[1]
        return None

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
        everything = self._fresh(self._listings, (method, experiment_id, plugin_name, None))
        if everything is not None and runs is not None:
            return {run: everything[run] for run in runs if run in everything}
        key = (method, experiment_id, plugin_name, runs)
        cached = everything if runs is None else self._fresh(self._listings, key)
        if cached is not None:
            return cached
        listing = getattr(self._inner, method)(ctx, experiment_id=experiment_id, plugin_name=plugin_name, run_tag_filter=run_tag_filter)
        return self._store(self._listings, key, listing)

    def _read(self, method: str, ctx, experiment_id, plugin_name, downsample, run_tag_filter) -> dict:
        result: dict[str, dict] = {}
        for run in run_tag_filter.runs if run_tag_filter is not None and run_tag_filter.runs else ():
            key = (method, experiment_id, plugin_name, run, downsample)
            series = self._fresh(self._run_series, key)
            if series is None:
                data = getattr(self._inner, method)(
                    ctx,
                    experiment_id=experiment_id,
                    plugin_name=plugin_name,
                    downsample=downsample,
                    run_tag_filter=tb_provider.RunTagFilter(runs=[run]),
                )
                series = self._store(self._run_series, key, data.get(run, {}))
                if method == "read_blob_sequences":
                    with self._lock:
                        for datums in series.values():
                            for d in datums:
                                for ref in d.values:
                                    self._wall_time[ref.blob_key] = d.wall_time
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
