"""The dashboard's caching view of the data provider: fewer calls, never stale after a rewrite."""
import functools
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from tb_convviz import ConvViz, load, storage
from tb_convviz.schema import format as fmt
from tb_convviz.schema import records, sidecar
from tb_convviz.plugin.cache import CachingProvider
from tb_convviz.read.reader import ConvVizReader
from tb_convviz.read.store import RecordStore
from tb_convviz.write import callback
from tb_convviz.write.writer import RecordWriter


class Counting:
    """Forwards to a real data provider and counts the calls that reach it."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = {"list": 0, "series": 0, "blob": 0}

    def list_blob_sequences(self, ctx=None, **kw):
        self.calls["list"] += 1
        return self.inner.list_blob_sequences(ctx, **kw)

    def list_tensors(self, ctx=None, **kw):
        self.calls["list"] += 1
        return self.inner.list_tensors(ctx, **kw)

    def read_blob_sequences(self, ctx=None, **kw):
        self.calls["series"] += 1
        return self.inner.read_blob_sequences(ctx, **kw)

    def read_tensors(self, ctx=None, **kw):
        self.calls["series"] += 1
        return self.inner.read_tensors(ctx, **kw)

    def read_blob(self, ctx=None, **kw):
        self.calls["blob"] += 1
        return self.inner.read_blob(ctx, **kw)


def _logs(tmp_path, epochs=4, format_1=False):
    """A small run; `format_1`: written as logs were before groups (one blob-sequence event per record)."""
    torch.manual_seed(0)  # whether a step's kernels are stored as a change depends on the weights
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 3, 3))
    with pytest.MonkeyPatch.context() as patch:
        if format_1:
            patch.setattr(callback, "RecordWriter", functools.partial(RecordWriter, sidecar=False))
        viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 1, 8, 8), perturbations=False)
        for epoch in range(epochs):
            with torch.no_grad():
                model[0].weight.add_(0.1)
            viz.log(model, epoch)
        viz.close()
    return load(tmp_path)


@pytest.mark.parametrize("format_1", [False, True])
def test_repeated_reads_hit_the_cache_and_agree_with_the_provider(tmp_path, format_1):
    logs = _logs(tmp_path, format_1=format_1)
    counting = Counting(logs._provider)
    cached = ConvVizReader(CachingProvider(counting, ttl_s=60), store=logs._store)
    for _ in range(3):
        assert cached.steps("run", "0") == [0, 1, 2, 3]
        assert cached.steps("run", "1", fmt.KIND_MAPS) == [0, 1, 2, 3]
        kernels = cached.bundle("run", "0", fmt.KIND_KERNELS, 2)
        got = kernels.array("kernel")
    # One listing of each data class, and one read of all the run's tags in the one its streams
    # use. Format 2 hands over each step's groups with the series: no blob is read; format 1 reads
    # the kernels' blob once (and its keyframe's, where they are stored as a change).
    blobs = 1 + (records.kernel_reference(kernels) is not None) if format_1 else 0
    assert counting.calls == {"list": 2, "series": 1, "blob": blobs}
    assert (got == logs.kernels("run", "0", 2)).all()
    assert [s for s, _ in cached.bundles("run", "1", fmt.KIND_FILTERS)] == [0, 1, 2, 3]


def test_a_run_is_listed_from_the_last_listing_of_every_run(tmp_path):
    """The tab lists every run each few seconds (/index): a route about one run lists nothing anew."""
    logs = _logs(tmp_path, epochs=2)
    counting = Counting(logs._provider)
    reader = ConvVizReader(CachingProvider(counting, ttl_s=60), store=logs._store)
    assert reader.runs() == ["run"] and counting.calls["list"] == 2
    assert reader.steps("run", "0") == [0, 1]
    assert counting.calls["list"] == 2


def test_listings_expire_so_new_epochs_appear(tmp_path):
    logs = _logs(tmp_path, epochs=2)
    counting = Counting(logs._provider)
    provider = CachingProvider(counting, ttl_s=0.05, stale_s=0)
    reader = ConvVizReader(provider, store=logs._store)
    reader.runs()
    reader.runs()
    assert counting.calls["list"] == 2  # blob sequences and tensors
    time.sleep(0.1)
    reader.runs()
    assert counting.calls["list"] == 4


def test_a_stale_listing_answers_at_once_while_the_background_brings_the_new_epochs(tmp_path):
    """Past the TTL (but within `stale_s`) the last listing and series answer without a call to
    TensorBoard; one background call each brings them up to date for the next answer."""
    logs = _logs(tmp_path / "then", epochs=2)
    counting = Counting(logs._provider)
    provider = CachingProvider(counting, ttl_s=0.05, stale_s=60)
    assert ConvVizReader(provider, store=logs._store).steps("run", "0") == [0, 1]
    calls = dict(counting.calls)
    fresh = _logs(tmp_path / "now", epochs=3)  # what TensorBoard holds a moment later: a new epoch
    counting.inner = fresh._provider
    time.sleep(0.1)
    assert ConvVizReader(provider, store=fresh._store).steps("run", "0") == [0, 1]  # the stale answer, at once
    assert wait_until(lambda: ConvVizReader(provider, store=fresh._store).steps("run", "0") == [0, 1, 2])
    assert counting.calls["list"] == calls["list"] + 2 and counting.calls["series"] == calls["series"] + 1


def wait_until(condition, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_blob_cache_stays_within_its_byte_budget(tmp_path):
    logs = _logs(tmp_path, format_1=True)  # format 2 reads no blobs
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


def test_index_is_answered_again_once_a_run_changes(tmp_path):
    """The tab's /index is kept whole (in JSON) while no run changes: a new epoch, once TensorBoard
    has read it, is in the next answers; until then the kept one is served, byte for byte."""
    from tensorboard.backend.application import TensorBoardWSGI
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client

    from tb_convviz.plugin.plugin import ConvVizPlugin

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Conv2d(2, 3, 3))
    viz = ConvViz(tmp_path / "run", probe=torch.randn(2, 1, 8, 8), perturbations=False, background=False)
    viz.log(model, 0)
    logs = load(tmp_path)
    plugin = ConvVizPlugin(base_plugin.TBContext(data_provider=logs._provider, logdir=str(tmp_path)))
    plugin._provider._ttl = 0.05
    client = Client(TensorBoardWSGI([plugin]))

    def index() -> bytes:
        return client.get("/data/plugin/convviz/index").get_data()

    first = index()
    assert index() == first and b'"steps": [0]' in first
    viz.log(model, 1)
    viz.close()
    logs._provider._multiplexer.Reload()  # TensorBoard reads the new epoch
    assert wait_until(lambda: b'"steps": [0, 1]' in index())


def test_index_follows_a_listing_that_lagged_the_series(tmp_path):
    """TensorBoard's listing and a run's series are read by separate calls, refreshed apart: an
    /index worked out while the listing still lacked a stream is answered again once it has it."""
    from tensorboard.backend.application import TensorBoardWSGI
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client

    from tb_convviz.plugin.plugin import ConvVizPlugin

    logs = _logs(tmp_path, epochs=2)
    hidden = {"0/@filters+kernels+maps+profile"}  # one of layer 0's streams, not yet listed

    class Lagging(Counting):
        def list_tensors(self, ctx=None, **kw):
            listing = super().list_tensors(ctx, **kw)
            return {run: {t: s for t, s in tags.items() if t not in hidden} for run, tags in listing.items()}

    assert hidden <= set(logs._provider.list_tensors(logs.context, experiment_id="", plugin_name=fmt.PLUGIN_NAME)["run"])
    plugin = ConvVizPlugin(base_plugin.TBContext(data_provider=Lagging(logs._provider), logdir=str(tmp_path)))
    plugin._provider._ttl = 0.05
    client = Client(TensorBoardWSGI([plugin]))

    def layer_steps() -> list:
        runs = client.get("/data/plugin/convviz/index").get_json()["runs"]
        return [layer["steps"] for layer in runs[0]["layers"] if layer["name"] == "0"]

    assert layer_steps() == []  # its filters are in the stream not yet listed
    hidden.clear()
    assert wait_until(lambda: layer_steps() == [[0, 1]])
