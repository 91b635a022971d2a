"""A caching view of TensorBoard's data provider for the dashboard's routes.

Each call to the Rust data server costs ~40 ms whatever its size (seen here with 2.21), and one
dashboard answer needs several calls: the listing, a run's step references and a few blobs. So
listings are reused for a few seconds (TensorBoard itself reloads every 5 s by default), one
call fetches the references of every tag of a run, and blobs, which never change under a given
key and wall time, stay in a byte-bounded LRU (for logs written before sidecars these are the
records; since, mostly references into the sidecar files, whose records `read.store` keeps).
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
    """Implements the three DataProvider calls the reader makes, over `inner`, with caching."""

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
        runs = tuple(sorted(run_tag_filter.runs)) if run_tag_filter is not None and run_tag_filter.runs else None
        key = (experiment_id, plugin_name, runs)
        cached = self._fresh(self._listings, key)
        if cached is not None:
            return cached
        listing = self._inner.list_blob_sequences(
            ctx, experiment_id=experiment_id, plugin_name=plugin_name, run_tag_filter=run_tag_filter
        )
        return self._store(self._listings, key, listing)

    def read_blob_sequences(self, ctx=None, *, experiment_id, plugin_name, downsample=None, run_tag_filter=None):
        """Served from one cached read of all tags of each requested run."""
        result: dict[str, dict] = {}
        for run in run_tag_filter.runs if run_tag_filter is not None and run_tag_filter.runs else ():
            key = (experiment_id, plugin_name, run, downsample)
            series = self._fresh(self._run_series, key)
            if series is None:
                data = self._inner.read_blob_sequences(
                    ctx,
                    experiment_id=experiment_id,
                    plugin_name=plugin_name,
                    downsample=downsample,
                    run_tag_filter=tb_provider.RunTagFilter(runs=[run]),
                )
                series = self._store(self._run_series, key, data.get(run, {}))
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
