"""The dashboard's caching view of the data provider: fewer calls, never stale after a rewrite."""
import time
from pathlib import Path

import torch
from torch import nn

from tb_convviz import ConvViz, load, storage
from tb_convviz.schema import format as fmt
from tb_convviz.schema import sidecar
from tb_convviz.plugin.cache import CachingProvider
from tb_convviz.read.reader import ConvVizReader
from tb_convviz.read.store import RecordStore


class Counting:
    """Forwards to a real data provider and counts the calls that reach it."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = {"list": 0, "series": 0, "blob": 0}

    def list_blob_sequences(self, ctx=None, **kw):
        self.calls["list"] += 1
        return self.inner.list_blob_sequences(ctx, **kw)

    def read_blob_sequences(self, ctx=None, **kw):
        self.calls["series"] += 1
        return self.inner.read_blob_sequences(ctx, **kw)

    def read_blob(self, ctx=None, **kw):
        self.calls["blob"] += 1
        return self.inner.read_blob(ctx, **kw)


def _logs(tmp_path, epochs=4):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 3, 3))
    viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 1, 8, 8), perturbations=False)
    for epoch in range(epochs):
        with torch.no_grad():
            model[0].weight.add_(0.1)
        viz.log(model, epoch)
    viz.close()
    return load(tmp_path)


def test_repeated_reads_hit_the_cache_and_agree_with_the_provider(tmp_path):
    logs = _logs(tmp_path)
    counting = Counting(logs._provider)
    cached = ConvVizReader(CachingProvider(counting, ttl_s=60), store=logs._store)
    for _ in range(3):
        assert cached.steps("run", "0") == [0, 1, 2, 3]
        assert cached.steps("run", "1", fmt.KIND_MAPS) == [0, 1, 2, 3]
        got = cached.bundle("run", "0", fmt.KIND_KERNELS, 2).array("kernel")
    # one read of all the run's tags, and one listing: whether its streams follow the commit rule
    assert counting.calls == {"list": 1, "series": 1, "blob": 1}
    assert (got == logs.kernels("run", "0", 2)).all()
    assert [s for s, _ in cached.bundles("run", "1", fmt.KIND_FILTERS)] == [0, 1, 2, 3]


def test_listings_expire_so_new_epochs_appear(tmp_path):
    logs = _logs(tmp_path, epochs=2)
    counting = Counting(logs._provider)
    provider = CachingProvider(counting, ttl_s=0.05)
    reader = ConvVizReader(provider, store=logs._store)
    reader.runs()
    reader.runs()
    assert counting.calls["list"] == 1
    time.sleep(0.1)
    reader.runs()
    assert counting.calls["list"] == 2


def test_blob_cache_stays_within_its_byte_budget(tmp_path):
    logs = _logs(tmp_path)
    provider = CachingProvider(logs._provider, ttl_s=60, blob_bytes=1)
    reader = ConvVizReader(provider, store=logs._store)
    for step in range(4):
        reader.bundle("run", "0", fmt.KIND_FILTERS, step)
    assert len(provider._blobs) == 1  # only the newest survives a 1-byte budget


def test_prefetch_warms_the_record_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(sidecar, "INLINE_MAX", 0)  # this small net's records would stay in their events
    logs = _logs(tmp_path)
    reads = []
    real = storage.read_range
    monkeypatch.setattr(storage, "read_range", lambda *a: reads.append(a) or real(*a))
    reader = ConvVizReader(CachingProvider(logs._provider, ttl_s=60), store=RecordStore(tmp_path))
    reader.prefetch("run", "1", fmt.KIND_MAPS)
    reader._store.wait()
    assert len(reads) == 4  # every step's maps, each one ranged read of the run's sidecar
    for step in range(4):
        reader.bundle("run", "1", fmt.KIND_MAPS, step)
    assert len(reads) == 4


def test_answer_cache_computes_once_per_key_and_keeps_the_latest_entries():
    from tb_convviz.plugin.cache import AnswerCache

    cache = AnswerCache(entries=2)
    calls = []

    def compute(value):
        return lambda: calls.append(value) or value

    assert cache.get_or_compute(("a", 1), compute("A")) == "A"
    assert cache.get_or_compute(("a", 1), compute("again")) == "A"  # same request, same runs: reused
    assert cache.get_or_compute(("a", 2), compute("A2")) == "A2"  # a new epoch is a new key
    assert cache.get_or_compute(("b", 1), compute("B")) == "B"  # evicts ("a", 1), the least recent
    assert cache.get_or_compute(("a", 1), compute("A'")) == "A'"
    assert calls == ["A", "A2", "B", "A'"]


def test_memo_bounds_bytes_keeps_the_newest_and_replaces_an_old_version():
    from tb_convviz.read.memo import Memo

    blobs = Memo(max_bytes=10, size=len)
    blobs.get_or_compute("a", lambda: b"12345")
    blobs.get_or_compute("b", lambda: b"123456")  # 11 bytes > 10: "a", the least recent, goes
    assert "a" not in blobs and "b" in blobs
    blobs.get_or_compute("c", lambda: b"x" * 20)  # larger than the bound alone: kept, alone
    assert len(blobs) == 1 and "c" in blobs
    columns = Memo(4)
    assert columns.get_or_compute("k", lambda: 1, version="sig1") == 1
    assert columns.get_or_compute("k", lambda: 2, version="sig1") == 1  # same run signature: reused
    assert columns.get_or_compute("k", lambda: 3, version="sig2") == 3  # the run changed: recomputed
    assert len(columns) == 1  # the new version replaced the old one under its key


def test_every_lru_of_the_package_is_the_memo():
    """One LRU: least-recently-used bookkeeping (OrderedDict's move_to_end / popitem) lives in memo.py only."""
    import tb_convviz

    package = Path(tb_convviz.__file__).parent
    holders = sorted(
        str(p.relative_to(package))
        for p in package.rglob("*.py")
        if "move_to_end" in p.read_text() or "popitem(last=False)" in p.read_text()
    )
    assert holders == ["read/memo.py"]
