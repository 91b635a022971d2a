"""Reads convviz records through TensorBoard's own data provider, for the plugin and for `load()`."""
from __future__ import annotations

import functools
import os
import sys
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, NamedTuple, Optional, Union

import numpy as np
from packaging.version import InvalidVersion, Version
from tensorboard import context as tb_context
from tensorboard.data import provider as tb_provider

from tb_convviz.schema import format as fmt
from tb_convviz.schema import groups, records
from tb_convviz.analysis.embedding import axis_variance_share, embedding_trail, filter_embedding
from tb_convviz.analysis.impact import class_table, spearman
from tb_convviz.analysis.similarity import Pairing, debiased_cka_matrix, linear_cka, pair_filters
from tb_convviz.schema.commits import whole_records
from tb_convviz.read.memo import Memo
from tb_convviz.read.store import RecordStore
from tb_convviz.schema.columns import LAYER_SCALARS
from tb_convviz.read.table import TABLE_KINDS, TableColumn, record_columns, table_csv

_ALL_STEPS = 1 << 30  # downsample bound meaning "every step": users must see every epoch
_PARALLEL_READS = 8  # blob reads in flight at once: each waits on the data server, not the CPU
# The Taylor check pools the random calibration samples of this many of a layer's last logs: one
# log's sample is 32 filters, and a large model's layers draw one only every few logs.
CALIBRATION_LOGS = 4


# Runs' series read at once for /index (`read_runs`), shared by every answer: a pool of its own
# for each /index started 8 threads each time.
_RUN_READERS = ThreadPoolExecutor(_PARALLEL_READS, thread_name_prefix="convviz-runs")

# Filter matchings by the two profile records they were solved on: an optimal assignment of a
# 2048-filter layer takes ~0.5 s, and while a large model's layers take turns, several steps share
# one profile. 256 matchings of 2048 filters are 8 MB.
_MATCHES = Memo(256)

# Optimal assignments solved at once in this process: each holds a core (scipy releases the GIL),
# so half the cores at most, leaving the rest to every other route of a shared TensorBoard (with
# both of 2 cores solving, /index took ~0.9 s). A request that finds no free slot within
# SOLVE_WAIT_S is told to come back (HTTP 503 with Retry-After) instead of queueing.
MAX_SOLVES = max(1, (os.cpu_count() or 2) // 2)
SOLVE_WAIT_S = 2.0
SOLVE_RETRY_S = 2


class SolveBusy(RuntimeError):
    """Every solve slot is taken: try again after `retry_after_s` seconds."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


_SOLVES = threading.BoundedSemaphore(MAX_SOLVES)
# How much lower than the server's other threads a solve runs, in nice steps (Linux: per thread).
# A slot keeps a solve from taking every core; on a 2-core machine the one it takes is still the
# one /index waits for (for a core, not the GIL: a solve in another process slows it as much), so
# the solve also yields that core to any route that wants it: weight 110 against 1024.
SOLVE_NICENESS = 10


def _solve_at_low_priority() -> None:
    """The solver threads' initializer: lower this thread alone (Linux's setpriority takes a thread
    id; elsewhere it would lower the whole TensorBoard process, so it is not done)."""
    if sys.platform.startswith("linux"):
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + SOLVE_NICENESS)
        except OSError as e:  # a sandbox that forbids it: solves run at the server's priority
            warnings.warn(f"tb_convviz: filter pairings run at TensorBoard's own priority ({e})", RuntimeWarning)


_SOLVER = ThreadPoolExecutor(MAX_SOLVES, thread_name_prefix="convviz-solve", initializer=_solve_at_low_priority)

# Records' headers (meta and array shapes) by the record they came from: `/index` and every
# route's parameter checks need a run's layer order, each layer's facts and the probe's shape,
# which are a few hundred bytes of records up to ~1 MB (the probe images), so they stay cached
# even when the bulky records they sit in have left the record cache.
_HEADS = Memo(16384)


class RecordHead(NamedTuple):
    """What a record says of itself without its arrays: its meta and each array's shape."""

    meta: dict
    shapes: dict[str, tuple[int, ...]]


class NotFound(LookupError):
    """A run, layer, kind or step that the logs do not hold; the message says which."""


class Stream(NamedTuple):
    """What one tag holds: the record kinds of its every event; whether each event is a group of
    a layer's records (`schema.groups`) rather than one record; whether it follows the commit
    rule's stamps (`commits`); and whether TensorBoard hands its events over with the series
    (format 2's string tensors) rather than one blob read each (format 1's blob sequences)."""

    kinds: tuple[str, ...]
    grouped: bool
    stamped: bool
    held: bool = False


class _Held(NamedTuple):
    """A record TensorBoard handed over with its series: the event's value (a string tensor: a
    group's payload, or the record itself when `kind` is None), where it is (`tag`, `step`,
    `wall_time`)."""

    step: int
    wall_time: float
    tag: str
    value: Any
    kind: Optional[str]


Datum = Union[tb_provider.BlobSequenceDatum, _Held]  # one record, as `_series` lists it


@functools.lru_cache(maxsize=256)
def _record_stream(content: bytes) -> tuple[Optional[Stream], str]:
    """(the stream, "") of a tag this version reads, with why it leaves out kinds it does not know;
    (None, why) for one it cannot read. Cached: a large model's listing repeats the same few
    contents hundreds of times, and every route lists."""
    try:
        meta = fmt.parse_plugin_content(content)
    except ValueError as e:
        return None, str(e)
    known, unknown = fmt.known_kinds(meta)
    why = f"record kinds {unknown} in it are not ones this version reads" if unknown else ""
    return Stream(tuple(known), meta["kind"] == groups.KIND_GROUP, bool(meta.get(fmt.STAMPED))), why


_record_origin = functools.lru_cache(maxsize=256)(fmt.record_origin)  # a sweep's listing repeats a few contents thousands of times


def _held_payload(value: Any) -> bytes:
    """The bytes of a scalar string tensor's value; ValueError for any other tensor."""
    value = np.asarray(value).reshape(-1)
    if value.size != 1 or not isinstance(value[0], bytes):
        raise ValueError(f"its event holds {value.size} values of {value.dtype}, not one string")
    return value[0]


def _version_order(version: Optional[str]) -> tuple:
    """Sort key of a tb_convviz version: unnamed and unparsable ones first."""
    try:
        return (1, Version(version)) if version is not None else (0,)
    except InvalidVersion:
        return (0,)


def newest_version(versions: Iterable[Optional[str]]) -> Optional[str]:
    """The newest of some tb_convviz versions (None where none is named)."""
    return max(versions, key=_version_order, default=None)


# Bad records a process remembers, so that a logdir full of them costs bounded memory.
MAX_PROBLEMS = 1000


class Problems:
    """Records that could not be read: (run, tag, step) → reason. Every route skips them and
    answers what it can; `/index` lists them and `load()` warns once per record."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[tuple[str, str, Optional[int]], str] = {}

    def add(self, run: str, tag: str, step: Optional[int], reason: str) -> bool:
        """Remember one; True when it is new."""
        key = (run, tag, step)
        with self._lock:
            if key in self._found or len(self._found) >= MAX_PROBLEMS:
                return False
            self._found[key] = reason
            return True

    def listed(self) -> list[dict]:
        """Each problem as {"run", "tag", "step" (None: every step of the tag), "reason"}."""
        with self._lock:
            found = sorted(self._found.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] if kv[0][2] is not None else -1))
        return [{"run": r, "tag": t, "step": s, "reason": why} for (r, t, s), why in found]


class ConvVizReader:
    """Runs → layers → steps → decoded bundles, over any `tensorboard.data.provider.DataProvider`."""

    def __init__(self, data_provider: tb_provider.DataProvider, experiment_id: str = "", ctx: Any = None,
                 problems: Optional[Problems] = None, store: Optional[RecordStore] = None, one_answer: bool = False):
        """`one_answer`: the reader serves one route answer from one state of the logs: it lists the
        records once (/index asks every layer's kinds, and listing a ResNet-50's records per layer
        was most of its time) and reads each run's streams once (a listing of many runs can outlast
        the provider's cache, and would read them again). Without it every question lists anew, so
        a long-lived `Logs` sees new steps."""
        self._provider = data_provider
        self._seen: Optional[dict[str, dict]] = {} if one_answer else None
        self._series_seen: Optional[dict[tuple[str, str, str], Union[list, NotFound]]] = {} if one_answer else None
        self._store = store if store is not None else RecordStore(None)
        self._eid = experiment_id
        self._ctx = ctx if ctx is not None else tb_context.RequestContext()
        self.problems = problems if problems is not None else Problems()
        self._listed: Optional[dict[Optional[str], dict[str, dict[str, Stream]]]] = {} if one_answer else None
        self._by_layer: dict[str, dict[str, list[str]]] = {}  # one answer's run → layer → kinds

    def _problem(self, run: str, tag: str, step: Optional[int], reason: str) -> None:
        """A record that cannot be read: remembered, skipped, and reported (`Logs` warns)."""
        self.problems.add(run, tag, step, reason)

    @property
    def logdir(self) -> Optional[str]:
        """The logdir whose sidecar files this reader reads (None: inline records only, or the
        several folders of a `--logdir_spec`)."""
        return self._store.logdir

    @property
    def context(self) -> Any:
        """The TensorBoard request context this reader reads under."""
        return self._ctx

    def _index(self, run: Optional[str] = None) -> dict[str, dict[str, Stream]]:
        """{run: {tag: its stream}} of records this version can read (of `run` only, when given)."""
        if self._listed is None:
            return self._list(run)
        if None in self._listed:  # every run listed already
            everything = self._listed[None]
            return everything if run is None else ({run: everything[run]} if run in everything else {})
        if run not in self._listed:
            self._listed[run] = self._list(run)
        return self._listed[run]

    def _listings(self, run: Optional[str]) -> tuple[dict, dict]:
        """TensorBoard's listings of this plugin's (blob sequences, tensors): format 1 and 2."""
        where = dict(experiment_id=self._eid, plugin_name=fmt.PLUGIN_NAME,
                     run_tag_filter=tb_provider.RunTagFilter(runs=[run]) if run is not None else None)
        return self._provider.list_blob_sequences(self._ctx, **where), self._provider.list_tensors(self._ctx, **where)

    def _list(self, run: Optional[str]) -> dict[str, dict[str, Stream]]:
        index: dict[str, dict[str, Stream]] = {}
        for held, listing in enumerate(self._listings(run)):
            for run_name, tags in listing.items():
                for tag, series in tags.items():
                    stream, reason = _record_stream(series.plugin_content)
                    if stream is not None and stream.grouped and not held:
                        stream, reason = None, "a group of records in a blob sequence: groups are string tensors"
                    if stream is not None:
                        index.setdefault(run_name, {})[tag] = stream._replace(held=bool(held))
                    if reason:
                        self._problem(run_name, tag, None, reason)
        return index

    def runs(self) -> list[str]:
        return sorted(self._index())

    def origins(self) -> dict[str, set[tuple[int, Optional[str]]]]:
        """{run: {(format version, tb_convviz version that wrote it or None)}} of every record
        stream, also those this version cannot read: which version wrote a log, which to install."""
        out: dict[str, set[tuple[int, Optional[str]]]] = {}
        for listing in self._listings(None):
            for run, tags in listing.items():
                out.setdefault(run, set()).update(_record_origin(series.plugin_content) for series in tags.values())
        return out

    def layers(self, run: str) -> list[str]:
        """Layer names in model order (as the run record lists them), else sorted."""
        tags = self._index(run).get(run)
        if not tags:
            raise NotFound(f"no convviz data for run {run!r}")
        names = {fmt.parse_tag(t)[0] for t in tags} - {fmt.RUN_LAYER}
        try:
            order = self.head(run, fmt.RUN_LAYER, fmt.KIND_RUN).meta.get("layers", [])
        except NotFound:
            order = []
        return [n for n in order if n in names] + sorted(names - set(order))

    def layer_kinds(self, run: str) -> dict[str, list[str]]:
        """{layer: its record kinds, sorted} of every layer of a run, from one listing (`kinds`
        lists the run once per layer: a whole-network reader asks for this instead)."""
        out: dict[str, set[str]] = {}
        for tag, stream in self._index(run).get(run, {}).items():
            out.setdefault(fmt.parse_tag(tag)[0], set()).update(stream.kinds)
        return {layer: sorted(found) for layer, found in out.items()}

    def kinds(self, run: str, layer: str) -> list[str]:
        if self._listed is None:
            return self.layer_kinds(run).get(layer, [])
        # One answer's reader sorts the run's records by layer once: /index asks every layer.
        if run not in self._by_layer:
            self._by_layer[run] = self.layer_kinds(run)
        return self._by_layer[run].get(layer, [])

    def _read_series(self, run: str, tags: Optional[list[str]]) -> dict[str, list]:
        """{tag: its events} of the run (of `tags` only, when given): BlobSequenceDatums of format 1's
        blob sequences, TensorDatums of format 2's string tensors."""
        if self._seen is not None:  # one answer reads one state of the run, however long it takes
            data = self._seen.get(run)
            if data is None:
                data = self._seen[run] = self._read_both(run, None)
            return data if tags is None else {t: data[t] for t in tags if t in data}
        return self._read_both(run, tags)

    def _read_both(self, run: str, tags: Optional[list[str]]) -> dict[str, list]:
        """Each data class the run's listed streams use, in one call each (a call to TensorBoard's
        Rust data server costs ~40 ms: a format-2 run costs one)."""
        streams = self._index(run).get(run, {})
        held = {stream.held for tag, stream in streams.items() if tags is None or tag in tags}
        kwargs = dict(experiment_id=self._eid, plugin_name=fmt.PLUGIN_NAME, downsample=_ALL_STEPS,
                      run_tag_filter=tb_provider.RunTagFilter(runs=[run], tags=tags))
        out: dict[str, list] = {}
        for is_held, read in ((False, self._provider.read_blob_sequences), (True, self._provider.read_tensors)):
            if is_held in held:
                for tag, data in read(self._ctx, **kwargs).get(run, {}).items():
                    out.setdefault(tag, []).extend(data)
        return out

    def read_runs(self, runs: Iterable[str]) -> None:
        """Read these runs' series at once (one answer's reader): each is a call to TensorBoard's
        data server, which answers calls in parallel, and /index reads every run."""
        if self._seen is None:
            return
        todo = [run for run in runs if run not in self._seen]
        self._index()  # listed once, before the threads ask
        for run, data in zip(todo, _RUN_READERS.map(lambda run: self._read_both(run, None), todo)):
            self._seen[run] = data

    def _series(self, run: str, layer: str, kind: str) -> list[Datum]:
        """A layer's `kind` records of whole steps only, one per step (`commits.whole_records`):
        from its own stream (format 1) and from the layer's group streams holding it (format 2).
        One answer's reader works each out once (/index asks each layer's twice)."""
        if self._series_seen is None:
            return self._whole_series(run, layer, kind)
        key = (run, layer, kind)
        if key not in self._series_seen:
            try:
                self._series_seen[key] = self._whole_series(run, layer, kind)
            except NotFound as e:
                self._series_seen[key] = e
        found = self._series_seen[key]
        if isinstance(found, NotFound):
            raise found
        return found

    def _whole_series(self, run: str, layer: str, kind: str) -> list[Datum]:
        index = self._index(run).get(run, {})
        commit_tags = [tag for tag, stream in index.items() if fmt.KIND_COMMIT in stream.kinds]
        if kind == fmt.KIND_COMMIT:
            sources = {tag: index[tag] for tag in commit_tags}
        else:
            sources = {tag: stream for tag, stream in index.items() if kind in stream.kinds and fmt.parse_tag(tag)[0] == layer}
        data = self._read_series(run, [*sources, *commit_tags])
        commits = [d for tag in commit_tags for d in data.get(tag, [])]
        found: dict[int, Datum] = {}
        for tag, stream in sources.items():
            for datum in whole_records(data.get(tag, []), commits, stream.stamped):
                if datum.step in found and datum.wall_time <= found[datum.step].wall_time:
                    continue  # a step in two layouts (a run resumed by a newer version): the later
                found[datum.step] = _Held(datum.step, datum.wall_time, tag, datum.numpy, kind if stream.grouped else None) if stream.held else datum
        if not found:
            raise NotFound(f"no {kind!r} records for layer {layer!r} in run {run!r}")
        return [found[step] for step in sorted(found)]

    def signature(self, run: str) -> tuple:
        """What the run holds now, cheaply: its listed streams, and every stream's record count and
        last record's step and stamp (a step written again changes it). An answer computed from the
        run stays valid while this stays the same."""
        series = self._read_series(run, None)
        listed = tuple(sorted(self._index(run).get(run, {})))  # its series are read through its listing, which may lag them
        return listed, tuple(sorted((tag, len(data), (data[-1].step, data[-1].wall_time) if data else None) for tag, data in series.items()))

    def steps(self, run: str, layer: str, kind: str = fmt.KIND_FILTERS) -> list[int]:
        return [d.step for d in self._series(run, layer, kind)]

    def bundle(self, run: str, layer: str, kind: str, step: Optional[int] = None) -> fmt.Bundle:
        """The record at `step` (the earliest one when None)."""
        series = self._series(run, layer, kind)
        datum = series[0] if step is None else next((d for d in series if d.step == step), None)
        if datum is None:
            raise NotFound(f"no {kind!r} record for layer {layer!r} of run {run!r} at step {step}")
        return self._decode(run, layer, kind, datum)

    def head(self, run: str, layer: str, kind: str, step: Optional[int] = None) -> RecordHead:
        """`bundle`'s meta and array shapes, kept apart from the record's arrays (see `_HEADS`)."""
        series = self._series(run, layer, kind)
        datum = series[0] if step is None else next((d for d in series if d.step == step), None)
        if datum is None:
            raise NotFound(f"no {kind!r} record for layer {layer!r} of run {run!r} at step {step}")

        def read() -> RecordHead:
            try:
                data: Union[bytes, ValueError] = self._record_bytes(run, datum, keep=False)
            except ValueError as e:
                data = e
            bundle = self._decode(run, layer, kind, datum, data)
            return RecordHead(bundle.meta, {name: bundle.shape(name) for name in bundle.names()})

        return _HEADS.get_or_compute((self._store.folders, self._eid, run, *self._record_identity(datum)), read)

    def _record_bytes(self, run: str, datum: Datum, keep: bool = True) -> bytes:
        """One record's bytes, through the one lazy path (`store`): TensorBoard holds its event,
        which is the record, a reference into the run's sidecar file, or a group of the layer's
        records of the step, each one of those. ValueError: unreadable."""
        if not isinstance(datum, _Held):
            payload = self._provider.read_blob(self._ctx, blob_key=datum.values[0].blob_key)
        elif datum.kind is None:
            payload = _held_payload(datum.value)
        else:
            payload = groups.group_part(_held_payload(datum.value), datum.kind)
        return self._store.record_bytes(run, payload, keep)

    def _decode(self, run: str, layer: str, kind: str, datum: Datum,
                data: Union[bytes, ValueError, None] = None) -> fmt.Bundle:
        """One record's bundle (from `data` when it was read already, or why it could not be); an
        unreadable one is a problem of its own and NotFound here."""
        try:
            if isinstance(data, ValueError):
                raise data
            bundle = fmt.decode_bundle(data if data is not None else self._record_bytes(run, datum))
            reference = records.kernel_reference(bundle) if kind == fmt.KIND_KERNELS else None
            if reference is not None:
                keyframe = next((d for d in self._series(run, layer, kind) if d.step == reference < datum.step), None)
                if keyframe is None:
                    raise ValueError(f"its reference, the kernels at step {reference}, is not in the log")
                records.resolve_reference(bundle, self._decode(run, layer, kind, keyframe))
            return bundle
        except (ValueError, NotFound) as e:
            self._problem(run, fmt.tag_for(layer, kind), datum.step, str(e))
            raise NotFound(f"record {kind!r} of layer {layer!r} at step {datum.step} is unreadable: {e}") from e

    def prefetch(self, run: str, layer: str, kind: str) -> None:
        """Read every step's record of one stream in the background (the slider comes next)."""
        self._store.prefetch(functools.partial(self._record_bytes, run, d) for d in self._series(run, layer, kind))

    def _read_or_why(self, run: str, datum: Datum) -> Union[bytes, ValueError]:
        try:
            return self._record_bytes(run, datum)
        except ValueError as e:
            return e

    def bundles(self, run: str, layer: str, kind: str) -> list[tuple[int, fmt.Bundle]]:
        """Every step's readable record of one stream, read concurrently: a history needs them all
        (an unreadable one is left out, and listed as a problem)."""
        series = self._series(run, layer, kind)
        with ThreadPoolExecutor(_PARALLEL_READS) as pool:
            found = list(pool.map(functools.partial(self._read_or_why, run), series))
        out = []
        for datum, data in zip(series, found):
            try:
                out.append((datum.step, self._decode(run, layer, kind, datum, data)))
            except NotFound:
                continue
        return out

    def _latest(self, run: str, layer: str, kind: str, step: int) -> Datum:
        """The last `kind` record at or before `step`: full kernels are kept only every few steps,
        and a large model's layers take turns at responses and profiles."""
        found = [d for d in self._series(run, layer, kind) if d.step <= step]
        if not found:
            raise NotFound(f"no {kind!r} record for layer {layer!r} of run {run!r} at or before step {step}")
        return max(found, key=lambda d: d.step)

    def latest_at_or_before(self, run: str, layer: str, kind: str, step: int) -> int:
        """The last step ≤ `step` holding a `kind` record."""
        return self._latest(run, layer, kind, step).step

    def footprint(self, run: str, layer: str, step: int) -> dict:
        """How the layer's kernel energy spreads over the kernel window, from the last full kernels at
        or before `step`: "ring_energy" (R,) share per Chebyshev ring from the centre, "offset_energy"
        (*kernel), "dead_share", "duplicate_share", "duplicate_pairs", "hint" (plain words or None),
        and "step" (the kernels' step)."""
        kernel_step = self.latest_at_or_before(run, layer, fmt.KIND_KERNELS, step)
        try:  # in that step's small filters record; logs from before that keep it with the kernels
            found = records.footprint(self.bundle(run, layer, fmt.KIND_FILTERS, kernel_step))
        except NotFound:
            found = None
        if found is None:
            found = records.footprint(self.bundle(run, layer, fmt.KIND_KERNELS, kernel_step))
        if found is None:
            raise NotFound(f"layer {layer!r} of run {run!r} was logged without kernel footprints")
        return {**found, "step": kernel_step}

    def gram(self, run: str, layer: str, step: int) -> np.ndarray:
        """The layer's (N, N) centered Gram matrix over the first N probe images at `step`."""
        bundle = self.bundle(run, fmt.RUN_LAYER, fmt.KIND_GRAM, step)
        if records.GRAM_PREFIX + layer not in bundle:
            raise NotFound(f"no Gram matrix of layer {layer!r} in run {run!r} at step {step}")
        return records.gram(bundle, layer)

    def profile(self, run: str, layer: str, step: int) -> np.ndarray:
        """(filters, images): each filter's mean activation on each of the first probe images, from
        the last profile at or before `step` (`profile_step`)."""
        return self._decode(run, layer, fmt.KIND_PROFILE, self._latest(run, layer, fmt.KIND_PROFILE, step)).array(records.PROFILE)

    def feature_vis(self, run: str, layer: str, step: int) -> dict:
        """The layer's feature visualisations from its last feature_vis record at or before `step`:
        {"filters" (k,), "images" (k, C, *size) in the model's input space, "objective" (k,) the
        mean activation each image reaches, "probe_best" (k,) the best any probe image reaches,
        "range" ({"lo", "hi"} per channel: the probe's), "step" (the record's step)}."""
        datum = self._latest(run, layer, fmt.KIND_FEATURE_VIS, step)
        return {**records.feature_vis(self._decode(run, layer, fmt.KIND_FEATURE_VIS, datum)), "step": datum.step}

    def feature_vis_history(self, run: str, layer: str, filter_: int) -> list[dict]:
        """Every logged visualisation of one filter, oldest first: [{"step", "image" (C, *size),
        "objective", "probe_best"}], for a filmstrip over the epochs; [] when it was never visualised."""
        found = []
        for step, bundle in self.bundles(run, layer, fmt.KIND_FEATURE_VIS):
            where = np.flatnonzero(bundle.array(records.FV_FILTERS) == filter_)
            if len(where):
                arrays = records.feature_vis(bundle, int(where[0]))
                found.append({"step": step, "image": arrays[records.FV_IMAGES], "objective": float(arrays[records.FV_OBJECTIVE]),
                              "probe_best": float(arrays[records.FV_PROBE_BEST]), "range": arrays[records.FV_RANGE]})
        return found

    def profile_step(self, run: str, layer: str, step: int) -> int:
        """The step of the profile `profile` reads for `step`."""
        return self.latest_at_or_before(run, layer, fmt.KIND_PROFILE, step)

    def probe_labels(self, run: str) -> Optional[np.ndarray]:
        """The probe's labels (N,), or None when the run was logged without them."""
        record = self.bundle(run, fmt.RUN_LAYER, fmt.KIND_RUN)
        return record.array(records.PROBE_LABELS) if records.PROBE_LABELS in record else None

    def check_same_probe(self, run_a: str, run_b: str) -> None:
        """CKA and matching compare what two snapshots do on the same images: refuse other probes."""
        if run_a == run_b:
            return
        a, b = (self.bundle(r, fmt.RUN_LAYER, fmt.KIND_RUN) for r in (run_a, run_b))
        if records.PROBE_IMAGES not in a or records.PROBE_IMAGES not in b:
            raise NotFound(f"runs {run_a!r} and {run_b!r} must both be logged with a probe to be compared")
        if a.shape(records.PROBE_IMAGES) != b.shape(records.PROBE_IMAGES) or not np.array_equal(
            a.array(records.PROBE_IMAGES), b.array(records.PROBE_IMAGES)
        ):
            raise ValueError(f"runs {run_a!r} and {run_b!r} were logged with different probes: their filters cannot be compared by activation")

    def cka(self, run_a: str, layer_a: str, step_a: int, run_b: str, layer_b: str, step_b: int, *,
            debiased: bool = True, interval: bool = False) -> Union[float, tuple[float, float, float]]:
        """Linear CKA (Kornblith et al. 2019) between two (run, layer, step) representations of the
        probe: debiased (unbiased HSIC; `debiased=False` gives the plain estimator, biased upwards
        on few images). `interval=True` answers (value, lo, hi), a 95% delete-one jackknife interval
        over probe images (`similarity.debiased_cka_matrix` says why it is valid); only with the
        debiased estimator."""
        self.check_same_probe(run_a, run_b)
        gram_a, gram_b = self.gram(run_a, layer_a, step_a), self.gram(run_b, layer_b, step_b)
        if not debiased:
            if interval:
                raise ValueError("interval=True needs the debiased estimator (debiased=True)")
            return linear_cka(gram_a, gram_b)
        found = debiased_cka_matrix([gram_a], [gram_b])
        value = float(found.value[0, 0])
        return (value, float(found.lo[0, 0]), float(found.hi[0, 0])) if interval else value

    def match(self, run_a: str, run_b: str, layer: str, step_a: int, step_b: int) -> tuple[np.ndarray, np.ndarray]:
        """For each filter of A, the index of B's filter that responds most alike (optimal one-to-one
        assignment on |correlation| of response profiles; −1 if unmatched), and that |correlation|,
        paired on A's profile at `step_a` and B's at `step_b`."""
        found = self.pairing(run_a, run_b, layer, step_a, step_b)
        return found.match, found.similarity

    def pair_step(self, run_a: str, run_b: str, layer: str) -> int:
        """The default reference step of a run-vs-run pairing: the last step both runs logged the
        layer's response profiles at (else the earlier of the two runs' last ones)."""
        steps_a, steps_b = (self.steps(r, layer, fmt.KIND_PROFILE) for r in (run_a, run_b))
        common = set(steps_a) & set(steps_b)
        return max(common) if common else min(steps_a[-1], steps_b[-1])

    def pairing(self, run_a: str, run_b: str, layer: str, step_a: int, step_b: int) -> Pairing:
        """`similarity.pair_filters` on each run's last profile at or before its step, with its
        chance level: solved once per pair of profile records (memoised; identical concurrent
        calls share the solve) and at most `MAX_SOLVES` at once in this process (`SolveBusy` when
        no slot frees within `SOLVE_WAIT_S`)."""
        self.check_same_probe(run_a, run_b)
        data_a, data_b = (self._latest(r, layer, fmt.KIND_PROFILE, s) for r, s in ((run_a, step_a), (run_b, step_b)))
        key = (self._eid, self._record_identity(data_a), self._record_identity(data_b))

        def solve() -> Pairing:
            # The slot first: a request refused one has decoded nothing.
            if not _SOLVES.acquire(timeout=SOLVE_WAIT_S):
                raise SolveBusy(f"{MAX_SOLVES} filter pairings are being solved; try again shortly", SOLVE_RETRY_S)
            try:
                profile_a, profile_b = (self._decode(r, layer, fmt.KIND_PROFILE, d).array(records.PROFILE)
                                        for r, d in ((run_a, data_a), (run_b, data_b)))
                return _SOLVER.submit(pair_filters, profile_a, profile_b).result()
            finally:
                _SOLVES.release()

        return _MATCHES.get_or_compute(key, solve)

    @staticmethod
    def _record_identity(datum: Datum) -> tuple:
        # A rewritten step (a restarted run) keeps its blob key but not its wall time.
        if isinstance(datum, _Held):
            return datum.tag, datum.step, datum.wall_time, datum.kind
        return datum.values[0].blob_key, datum.wall_time

    def costs(self, run: str) -> list[tuple[int, Optional[dict]]]:
        """(step, what its log cost) for every whole step: `cost.CostMeter.summary`'s parts, totals
        and training time since the previous log; None for steps logged before costs were kept."""
        out = []
        for step, bundle in self.bundles(run, fmt.RUN_LAYER, fmt.KIND_COMMIT):
            cost = bundle.meta.get(records.COST)
            out.append((step, cost if isinstance(cost, dict) else None))
        return out

    def filter_count(self, run: str, layer: str) -> int:
        """How many filters the layer has (its first filters record says)."""
        info = self.head(run, layer, fmt.KIND_FILTERS).meta.get("info")
        filters = info.get("filters") if isinstance(info, dict) else None
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 0:
            raise NotFound(f"layer {layer!r} of run {run!r}: its filters record does not say how many filters it has")
        return filters

    def table(self, run: str, layer: str, step: int) -> list[TableColumn]:
        """Every per-filter column the layer has at `step`, each from its kind's last record at or
        before `step` (full kernels and a large model's responses are not logged every step).
        A record that cannot be read leaves its columns out and is listed as a problem."""
        filters = self.filter_count(run, layer)
        kinds = self.kinds(run, layer)
        labels: Optional[np.ndarray] = None
        if fmt.KIND_IMPACT in kinds:
            try:
                labels = self.probe_labels(run)
            except NotFound:
                pass
        out: list[TableColumn] = []
        for kind in (k for k in TABLE_KINDS if k in kinds):
            try:
                datum = self._latest(run, layer, kind, step)
                bundle = self._decode(run, layer, kind, datum)
            except NotFound:
                continue
            try:
                found = record_columns(kind, bundle, labels, filters)
            except (ValueError, KeyError, TypeError) as e:
                self._problem(run, fmt.tag_for(layer, kind), datum.step, f"{type(e).__name__}: {e}")
                continue
            out.extend(TableColumn(column, values, interval, datum.step) for column, values, interval in found)
        return out

    def layer_scalars(self, run: str, layer: str, step: int) -> list[dict]:
        """The layer's whole-layer numbers at `step` (`schema.LAYER_SCALARS`): each declaration with
        its "value" and "record_step"; the Taylor check pools the random calibration samples of the
        last CALIBRATION_LOGS impact records that drew one, and says over how many filters
        ("filters") and which steps ("steps"). Empty without impact records."""
        if fmt.KIND_IMPACT not in self.kinds(run, layer):
            return []
        try:
            datum = self._latest(run, layer, fmt.KIND_IMPACT, step)
            record = self._decode(run, layer, fmt.KIND_IMPACT, datum)
        except NotFound:
            return []
        out = []
        for column in LAYER_SCALARS:
            entry = {**column.declaration(), "record_step": datum.step}
            if column.name == records.IMPACT_TAYLOR_SPEARMAN:
                entry.update(self._calibration(run, layer, datum.step))
            elif column.name in record:
                entry["value"] = float(record.array(column.name))
            else:
                continue
            out.append(entry)
        return out

    def _calibration(self, run: str, layer: str, step: int) -> dict:
        """Spearman ρ of Taylor vs exact over the sampled filters of the last CALIBRATION_LOGS impact
        records at or before `step` that hold a sample (pooled: one log's sample is small)."""
        taylor: list[np.ndarray] = []
        exact: list[np.ndarray] = []
        steps: list[int] = []
        for datum in reversed([d for d in self._series(run, layer, fmt.KIND_IMPACT) if d.step <= step]):
            try:
                record = self._decode(run, layer, fmt.KIND_IMPACT, datum)
            except NotFound:
                continue
            sampled = records.impact_sampled(record)
            if sampled is None:
                continue  # logged before calibration samples were kept
            if sampled.any():
                taylor.append(record.array(records.IMPACT_TAYLOR)[sampled])
                exact.append(record.array(records.IMPACT_D_LOSS)[sampled])
                steps.append(datum.step)
            if len(steps) == CALIBRATION_LOGS:
                break
        pairs = sum(len(t) for t in taylor)
        rho = spearman(np.concatenate(taylor), np.concatenate(exact)) if pairs >= 3 else float("nan")
        return {"value": rho, "filters": pairs, "steps": sorted(steps)}

    def embedding(self, run: str, layer: str, step: int, method: str = "pca") -> np.ndarray:
        """(filters, 2): a 2-D map of the layer's filters from their response profiles at `step`."""
        return filter_embedding(self.profile(run, layer, step), method)

    def embedding_trail(self, run: str, layer: str, method: str = "pca") -> tuple[list[int], np.ndarray]:
        """Every step's map (steps, filters, 2), each aligned to the one before (orthogonal Procrustes)
        so that the map follows the filters rather than jumping from one step to the next."""
        steps, trail, _ = self._embedding_trail(run, layer, method)
        return steps, trail

    def embedding_trail_with_variance(self, run: str, layer: str) -> tuple[list[int], np.ndarray, np.ndarray]:
        """The PCA trail, and (steps, 2) the share of each step's profile variance along each axis
        of its aligned map (`embedding.axis_variance_share`)."""
        steps, trail, profiles = self._embedding_trail(run, layer, "pca")
        return steps, trail, np.stack([axis_variance_share(p, points) for p, points in zip(profiles, trail)])

    def _embedding_trail(self, run: str, layer: str, method: str) -> tuple[list[int], np.ndarray, list[np.ndarray]]:
        steps, maps, profiles = [], [], []
        for step, bundle in self.bundles(run, layer, fmt.KIND_PROFILE):
            steps.append(step)
            profiles.append(bundle.array(records.PROFILE))
            maps.append(filter_embedding(profiles[-1], method))
        return steps, embedding_trail(maps), profiles


class Logs(ConvVizReader):
    """numpy access to a log dir, for notebooks and tests: ``load(logdir).kernels(run, layer, step)``."""

    def _problem(self, run: str, tag: str, step: Optional[int], reason: str) -> None:
        """Warn once per unreadable record; the rest of the logs read as usual."""
        if self.problems.add(run, tag, step, reason):
            where = f" at step {step}" if step is not None else ""
            warnings.warn(f"tb_convviz: skipped record {tag!r} of run {run!r}{where}: {reason}", RuntimeWarning, stacklevel=3)

    def kernels(self, run: str, layer: str, step: int) -> np.ndarray:
        """Raw kernels (filters, in/groups, *kernel) within the q8 tolerance: (max−min)/510 per filter."""
        return self.bundle(run, layer, fmt.KIND_KERNELS, step).array(records.KERNEL)

    def effective_kernels(self, run: str, layer: str, step: int) -> np.ndarray:
        """Kernels with the following BatchNorm folded in; NotFound when no BatchNorm follows."""
        effective = fmt.effective_kernel(self.bundle(run, layer, fmt.KIND_KERNELS, step))
        if effective is None:
            raise NotFound(f"layer {layer!r} has no BatchNorm directly after it")
        return effective

    def activations(self, run: str, layer: str, step: int) -> np.ndarray:
        """Activation maps (probe_n, filters, *spatial) for the probe images kept (see `maps_meta`)."""
        return self.bundle(run, layer, fmt.KIND_MAPS, step).array("maps")

    def filter_stats(self, run: str, layer: str, step: int) -> dict[str, np.ndarray]:
        """Per-filter arrays: l2, mean_abs, dead, drift vs previous and first log, activation stats."""
        b = self.bundle(run, layer, fmt.KIND_FILTERS, step)
        return {n: b.array(n) for n in records.filter_stat_names(b)}

    def perturbation(self, run: str, layer: str, step: int) -> dict[str, np.ndarray]:
        """Every perturbation-response array of the layer at `step` (keys: format.PERTURBATION_GROUPS)."""
        b = self.bundle(run, layer, fmt.KIND_PERTURBATION, step)
        return {n: b.array(n) for n in b.names()}

    def tuning(self, run: str, layer: str, step: int, name: str) -> dict[str, np.ndarray]:
        """One perturbation's arrays: "orientation", "rotation", "noise", "adversarial", "shift",
        "reversal", "shape_texture" (keys "shape_sensitivity", "texture_sensitivity", "index"), or a
        counterfactual's name (keys "change", "ci", "p", "q", "cosine", "z", "flag"; logs from
        before the test over probe images lack "ci", "p" and "q")."""
        arrays = self.perturbation(run, layer, step)
        if name in fmt.PERTURBATION_GROUPS:
            # A group is logged when a key of its own is there: "rotation_angles" alone belongs to
            # the grating analysis too, and is no rotated-probe curve.
            found = {k: arrays[k] for k in fmt.PERTURBATION_GROUPS[name] if k in arrays}
            if not set(found) & fmt.group_keys_of_its_own(name):
                found = {}
            found = {k.removeprefix(fmt.GROUP_KEY_PREFIX): v for k, v in found.items()}
        else:
            prefix = fmt.COUNTERFACTUAL_PREFIX + name
            found = {(k[len(prefix) + 1 :] or "change"): v for k, v in arrays.items() if k == prefix or k.startswith(prefix + "/")}
        if not found:
            groups = {g for g in fmt.PERTURBATION_GROUPS if fmt.group_keys_of_its_own(g) & set(arrays)}
            known = sorted(groups | {k.split("/")[1] for k in arrays if k.startswith(fmt.COUNTERFACTUAL_PREFIX)})
            raise NotFound(f"no {name!r} response for layer {layer!r} at step {step}; logged: {known}")
        return found

    def impact(self, run: str, layer: str, step: int) -> dict[str, np.ndarray]:
        """Per-filter impact arrays by metric: d_accuracy, d_loss, taylor_d_loss, exact (ablated
        exactly, or only estimated), p_value, p_adjusted, significant, d_accuracy_ci (F, 2),
        discordant (F, 2), …; and per class, rebuilt exactly from the record's sparse flips:
        classes (C,) present in the probe, class_support (C,), d_recall, d_precision (F, C) and
        d_recall_ci (F, C, 2), NaN for filters not ablated exactly."""
        b = self.bundle(run, layer, fmt.KIND_IMPACT, step)
        labels = self.probe_labels(run)
        out = {n: a for n, a in records.impact_arrays(b, labels).items() if not n.startswith(fmt.TOP_EXAMPLE_PREFIX)}
        if records.IMPACT_CLEAN_PRED in out:
            exact = out[records.IMPACT_EXACT].astype(bool)
            table = class_table(labels, out, np.arange(len(exact)), records.impact_alpha(b))
            for key in ("d_recall", "d_precision", "d_recall_ci"):
                table[key] = np.where(exact.reshape(-1, *([1] * (table[key].ndim - 1))), table[key], np.nan)
            out.update({k: table[k] for k in ("classes", "class_support", "d_recall", "d_precision", "d_recall_ci", "detectable_d_recall")})
        return out

    def cost(self, run: str, step: int) -> dict:
        """What the log of `step` cost: {"parts": {part: {"wall_s", "cpu_s", "forward_equivalents"}},
        "wall_s", "cpu_s", "forward_s" (the probe pass: one forward-equivalent), "forward_equivalents",
        "since_last_log_s"}; NotFound for steps logged before costs were kept."""
        found = dict(self.costs(run)).get(step)
        if found is None:
            raise NotFound(f"run {run!r} holds no cost for step {step}")
        return found

    def filter_table(self, run: str, layer: str, step: int) -> dict[str, np.ndarray]:
        """Every per-filter number of the layer at `step`: {name: (F,)}, and each interval
        companion (its column's `ci`) as (F, 2) — statistics, drift, activation statistics,
        perturbation and impact scalars and user metrics, each from the last record of its kind at
        or before `step` (`columns` says which step)."""
        out: dict[str, np.ndarray] = {}
        for entry in self.table(run, layer, step):
            out[entry.column.name] = entry.values
            if entry.interval is not None:
                out[entry.column.ci] = entry.interval
        return out

    def columns(self, run: str, layer: str, step: Optional[int] = None) -> list[dict]:
        """The declarations of `filter_table`'s columns at `step` (None: the last logged step):
        name, label, unit, description, better, first, format, group, ci, kind and record_step."""
        if step is None:
            step = self.steps(run, layer)[-1]
        return [entry.declaration() for entry in self.table(run, layer, step)]

    def to_csv(self, run: str, layer: str, step: int, path: Optional[str] = None) -> str:
        """`filter_table` as CSV, one row per filter and one column per number (an interval as
        `<name>_lo`, `<name>_hi`), raw values — what the tab's CSV button writes. Also written to
        `path` when given."""
        text = table_csv(self.table(run, layer, step), self.filter_count(run, layer))
        if path is not None:
            with open(path, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        return text

    def top_examples(self, run: str, layer: str, step: int) -> dict[str, np.ndarray]:
        """Top activating probe examples per filter: index, label (F, k), class, concentration, flag (F,)."""
        arrays = records.impact_arrays(self.bundle(run, layer, fmt.KIND_IMPACT, step), self.probe_labels(run))
        return {n[len(fmt.TOP_EXAMPLE_PREFIX) :]: a for n, a in arrays.items() if n.startswith(fmt.TOP_EXAMPLE_PREFIX)}

    def findings(self, run: str, step: Optional[int] = None) -> list[dict]:
        """What to look at in `run` at `step` (None: its last step), ranked by severity: each a dict
        with kind, layer, filters, classes, summary, evidence, rule, certainty, severity and view
        (the tab parameters that show it). Kinds and rules: `tb_convviz.analysis.findings.KINDS`."""
        return self.findings_report(run, step)["findings"]

    def findings_report(self, run: str, step: Optional[int] = None) -> dict:
        """`findings` with what surrounds them: the step, counts per kind (before the per-kind cap),
        the kinds that could not be looked for (why, and the option that enables them), the probe,
        alpha and the kinds' declarations (`read.findings.run_findings`)."""
        from tb_convviz.read.findings import run_findings  # it reads through this class

        return run_findings(self, run, step)

    def layer_info(self, run: str, layer: str) -> dict:
        return self.head(run, layer, fmt.KIND_FILTERS).meta["info"]

    def probe(self, run: str) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """The probe images (N, C, *spatial) and labels (N,) or None."""
        b = self.bundle(run, fmt.RUN_LAYER, fmt.KIND_RUN)
        if "images" not in b:
            raise NotFound(f"run {run!r} was logged without a probe")
        return b.array("images"), (b.array("labels") if "labels" in b else None)


class ToLast(NamedTuple):
    """One layer's debiased CKA of each step's representation with the last step's (`cka_to_last`)."""

    value: np.ndarray  # (steps,), NaN where the step has no Gram matrix of the layer
    lo: np.ndarray
    hi: np.ndarray
    images: int  # probe images the Gram matrices are over


def cka_to_last(series: list[tuple[int, fmt.Bundle]], layers: Iterable[str]) -> dict[str, ToLast]:
    """Per layer with a Gram matrix at the last of `series` (a run's Gram records, step order):
    CKA of every step with that one, with its interval — which layers settle first (the Findings'
    "settled" rule and the Similarity view's CKA-to-final read the same numbers)."""
    final = series[-1][1]
    out = {}
    for layer in layers:
        key = records.GRAM_PREFIX + layer
        if key not in final:
            continue
        having = [i for i, (_, b) in enumerate(series) if key in b]
        estimate = debiased_cka_matrix([records.gram(series[i][1], layer) for i in having], [records.gram(final, layer)])
        columns = []
        for found in (estimate.value, estimate.lo, estimate.hi):
            column = np.full(len(series), np.nan)
            column[having] = found[:, 0]
            columns.append(column)
        out[layer] = ToLast(*columns, estimate.images)
    return out


def load(logdir: Union[str, os.PathLike]) -> Logs:
    """Load every run under `logdir` (all steps kept) through TensorBoard's multiplexer data provider:
    a folder, or an object-store URL (``s3://bucket/runs``, ``gs://…``) TensorBoard reads (a folder
    in a bucket: TensorBoard's S3 reader does not take a bucket's root)."""
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer

    logdir = os.fspath(logdir)
    mux = plugin_event_multiplexer.EventMultiplexer(tensor_size_guidance={fmt.PLUGIN_NAME: 0})
    mux.AddRunsFromDirectory(logdir)
    mux.Reload()
    return Logs(data_provider.MultiplexerDataProvider(mux, logdir), store=RecordStore(logdir))
