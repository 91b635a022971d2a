"""Writes convviz records as TensorBoard summaries, in an event file of our own (or the user's).

A step's records of one layer go out as one small string-tensor event (`schema.groups`), their
bulk in a sidecar file (`schema.sidecar`): TensorBoard holds about a kilobyte per event, and hands
a reader every step's small events of a run in one call, so its memory and the dashboard's routes
stay the same however many epochs and runs were logged.

The event file is written here rather than through TensorBoard's EventFileWriter because, without
TensorFlow, that one checksums every byte in pure Python (~0.35 s per MB, seen here): longer than
all of convviz's own work for a ResNet-18 log. The `crc32c` package does it in C; the framing is
TFRecord's, which every TensorBoard loader reads.
"""
from __future__ import annotations

import os
import struct
import time
from typing import Any, Optional, Union

import crc32c
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from tb_convviz import storage
from tb_convviz.schema import format as fmt
from tb_convviz.schema import groups, sidecar
from tb_convviz.write import runfolder
from tb_convviz.schema.commits import new_stamp


def record_summary(layer: str, kind: str, payload: bytes) -> summary_pb2.Summary:
    """One record's `payload` as a length-1 blob sequence: format 1's one event per record."""
    return _summary(fmt.tag_for(layer, kind), fmt.plugin_content(kind), payload, held=False)


def group_summary(layer: str, parts: dict[str, bytes]) -> summary_pb2.Summary:
    """A layer's records of a step, {kind: stored bytes}, as one string tensor (`schema.groups`)."""
    kinds = sorted(parts)
    return _summary(groups.group_tag(layer, kinds), fmt.plugin_content(groups.KIND_GROUP, kinds),
                    groups.encode_group([(k, parts[k]) for k in kinds]), held=True)


def commit_summary(payload: bytes) -> summary_pb2.Summary:
    """A step's commit record as a string tensor, after its groups (`schema.groups`)."""
    return _summary(groups.COMMIT_TAG, fmt.plugin_content(fmt.KIND_COMMIT), payload, held=True)


def _summary(tag: str, content: bytes, payload: bytes, held: bool) -> summary_pb2.Summary:
    """`held`: a scalar string tensor, which TensorBoard hands a reader with the series listing
    (one call for every step of a run) instead of a blob, which is one call each."""
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=fmt.PLUGIN_NAME, content=content),
        data_class=summary_pb2.DATA_CLASS_TENSOR if held else summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    shape = tensor_shape_pb2.TensorShapeProto(dim=[] if held else [tensor_shape_pb2.TensorShapeProto.Dim(size=1)])
    tensor = tensor_pb2.TensorProto(dtype=types_pb2.DT_STRING, tensor_shape=shape, string_val=[payload])
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, metadata=metadata, tensor=tensor)])


def _masked_crc(data: bytes) -> bytes:
    x = crc32c.crc32c(data)
    return struct.pack("<I", (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord(data: bytes) -> bytes:
    """TFRecord framing: length, its masked CRC-32C, the data, its masked CRC-32C."""
    header = struct.pack("<Q", len(data))
    return header + _masked_crc(header) + data + _masked_crc(data)


def shared_event_file(summary_writer: Any, last: Optional[str] = None) -> Optional[str]:
    """The event file a torch SummaryWriter writes now, or None for a writer we do not know.

    TensorBoard's Python loader follows one event file per folder (the newest by name) and leaves
    the others where they stopped, so convviz's records go into the user's own file rather than a
    second one beside it. torch keeps its name on the EventFileWriter; it changes when the user's
    writer is closed and reopened, so it is looked up at every step. A closed writer is not asked
    (torch would reopen it, starting a new file): `last`, the file it wrote, goes on taking the
    steps still pending, as when a Trainer closes its writer before convviz's steps are written.
    Another writer (tensorboardX) gets a file of convviz's own.
    """
    try:
        file_writer = summary_writer.file_writer
        name = last if file_writer is None else file_writer.event_writer._file_name
    except AttributeError:
        return None
    return name if isinstance(name, str) and os.path.isfile(name) else None


class RecordWriter:
    """Appends records to an event file of its own in a log dir or, given a torch SummaryWriter,
    to that writer's own event file (whole records, each in one O_APPEND write, so they interleave
    with the writer's records and never inside one).

    Each step is one version (see `commits`): its records and its commit share one stamp. A failed
    write (a full disk) is rolled back to the last whole record, so the file stays readable and
    later steps append cleanly once space is back.

    A record over `sidecar.INLINE_MAX` bytes goes to the writer's sidecar file at once, and a
    reference to it (`schema.sidecar`) waits with the step's small records for the step's commit:
    then each layer's records go out as one event (`schema.groups`), followed by the commit, so
    TensorBoard's memory does not grow with the log. The sidecar is written before the references
    to it, made durable first, and cut back with them. `sidecar=False` writes every record into an
    event of its own as it comes, as logs were written before sidecars (for benchmarks and tests of
    those logs).

    A log dir in an object store (``s3://…``, ``gs://…``: `storage`) has no append: each step is
    one event-file object of its own, put whole at its commit, so a step is there whole or not at
    all, and a bucket that fails loses that step alone (StorageError, warned once by ConvViz).
    TensorBoard's loaders read a run's event files in name order, which is the steps' order.
    """

    def __init__(self, target: Union[str, os.PathLike, Any], *, sidecar: bool = True):
        self._summary_writer = None
        self._use_sidecar = sidecar
        self._sidecar_fd: Optional[int] = None
        self._sidecar_name = ""
        self._sidecar_size = 0  # bytes in the sidecar file
        self._sidecar_good = 0  # its size after the last whole step
        self._step_sidecar: list[bytes] = []  # an object-store step's sidecar records, put before its events
        self._pending: dict[str, dict[str, bytes]] = {}  # the step's records by layer and kind, as stored, until its commit
        if isinstance(target, (str, os.PathLike)):
            logdir = os.fspath(target)
        elif hasattr(target, "get_logdir"):  # a torch.utils.tensorboard.SummaryWriter: share its run
            logdir = target.get_logdir()
            self._summary_writer = target
        else:
            raise TypeError(
                f"log_dir_or_summary_writer must be a path or a torch SummaryWriter, not {type(target).__name__}"
            )
        self._remote = storage.is_remote(logdir)
        if self._remote:
            try:
                storage.filesystem(logdir)  # the protocol's library is installed (else: which extra)
            except ValueError as e:
                raise ValueError(f"log_dir: {e}") from e
            logdir = logdir.rstrip("/")
        else:
            logdir = storage.local(logdir)
            try:
                os.makedirs(logdir, exist_ok=True)
            except OSError as e:
                raise ValueError(f"log_dir {logdir!r} is not writable: {e}") from e
            if not os.access(logdir, os.W_OK | os.X_OK):
                raise ValueError(f"log_dir {logdir!r} is not writable")
        self.logdir = logdir
        self._step_records: list[bytes] = []  # an object-store step's framed records, put at its commit
        self._path: Optional[str] = None  # opened at the first record: a run that never logs leaves no file
        # The shared writer's file as last seen: it may be closed before the first step is written.
        self._shared = shared_event_file(self._summary_writer) if self._summary_writer is not None else None
        self._fd: Optional[int] = None
        self._own = True  # our own file: we alone append, and may cut it back to its last commit
        self._good = 0  # our own file's size after its last whole step
        self._stamp: Optional[float] = None  # the version being written
        self._last_step: Optional[int] = None  # the last step this writer committed
        runfolder.register(self)
        # Another writer's files in the folder: a live one warns (ConvViz), a dead one's steps from
        # our first on are replaced by ours in every loader (`_append_restart`; in a file of our own
        # only: in a shared file the mark would also drop the user's records of our first step).
        self.live_neighbours, self.earlier_writers = runfolder.neighbours(logdir, self)
        self._restart_own = self.earlier_writers > 0
        self._restart: Optional[int] = None  # a restart mark still to write, at this step

    @property
    def path(self) -> Optional[str]:
        """The event file written last, or None before the first record."""
        return self._path

    def _open(self) -> int:
        shared = None
        if self._summary_writer is not None:
            shared = self._shared = shared_event_file(self._summary_writer, self._shared)
        if shared is not None and shared != self._path:
            self._close_fd()
            self._fd = os.open(shared, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            self._path, self._own = shared, False
        elif shared is None and (self._fd is None or not self._own):
            self._close_fd()
            path = os.path.join(self.logdir, runfolder.own_file_name(time.time(), self))
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            self._path, self._own = path, True
            self._append(tfrecord(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()))
            self._good = os.fstat(self._fd).st_size
        assert self._fd is not None
        return self._fd

    def _append(self, record: bytes) -> None:
        """One framed record in one write; what a failure leaves of it is cut off again."""
        fd = self._open() if self._fd is None else self._fd
        done = 0
        try:
            while done < len(record):
                done += os.write(fd, record[done:])
        except OSError:
            if done:  # in a shared file: unless the user's writer appended since, on a full disk too
                self._cut(os.fstat(fd).st_size - done)
            raise

    def restart(self, step: int) -> None:
        """The run restarts at `step` (`ConvViz.resume`): what earlier writers left there and after
        is dropped. Marked at once, so that in a shared file it comes before the user's own records
        of the restarted steps; a failed write is tried again before the next step's records.
        In an object store the mark opens the next step's object."""
        self._restart = int(step)
        if self._remote:
            return
        try:
            self._open()
            self._append_restart(self._restart)
        except OSError:
            return
        self._restart = None
        if self._own:
            self._good = os.fstat(self._fd).st_size

    def write(self, layer: str, kind: str, step: int, payload: bytes) -> None:
        """One record of the step being written; a commit record ends the step's version."""
        if self._remote:
            self._write_remote(layer, kind, step, payload)
            return
        try:
            if self._stamp is None:
                self._stamp, self._pending = new_stamp(), {}
                self._open()
                if self._restart is not None:
                    self._append_restart(self._restart)
                elif (self._restart_own and self._own) or (self._last_step is not None and step <= self._last_step):
                    self._append_restart(step)
            if not self._use_sidecar:  # the layout from before sidecars: one event per record, as it comes
                self._append(self._event(step, record_summary(layer, kind, payload)))
            elif kind != fmt.KIND_COMMIT:
                self._pending.setdefault(layer, {})[kind] = self._stored(payload)
            else:  # the step's groups and its commit in one write: in a shared file, nothing comes between
                self._append(b"".join(self._step_events(step, payload)))
        except OSError:
            self._rollback()
            raise
        if kind == fmt.KIND_COMMIT:
            self._stamp, self._last_step, self._restart, self._restart_own = None, int(step), None, False

    def _event(self, step: int, summary: summary_pb2.Summary) -> bytes:
        """A framed event of the step being written, stamped with its version."""
        return tfrecord(event_pb2.Event(wall_time=self._stamp, step=int(step), summary=summary).SerializeToString())

    def _step_events(self, step: int, commit: bytes) -> list[bytes]:
        """The step's framed events: one group per layer, in the order layers came, then its commit."""
        events = [self._event(step, group_summary(layer, parts)) for layer, parts in self._pending.items()]
        self._pending = {}
        return [*events, self._event(step, commit_summary(commit))]

    def _stored(self, payload: bytes) -> bytes:
        """What the record's event holds: the payload, or a reference to it in the sidecar file."""
        if not self._use_sidecar or len(payload) <= sidecar.INLINE_MAX:
            return payload
        if self._remote:
            offset = sum(len(b) for b in self._step_sidecar)
            self._step_sidecar.append(payload)
            return sidecar.reference(self._sidecar_name, offset, payload)
        if self._sidecar_fd is None:
            self._sidecar_name = runfolder.sidecar_file_name(time.time(), self)
            path = os.path.join(self.logdir, self._sidecar_name)
            self._sidecar_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            self._sidecar_size = self._sidecar_good = 0
        offset, done = self._sidecar_size, 0
        try:
            while done < len(payload):
                done += os.write(self._sidecar_fd, payload[done:])
        except OSError:
            self._cut_sidecar(offset)
            raise
        self._sidecar_size += len(payload)
        return sidecar.reference(self._sidecar_name, offset, payload)

    def _cut_sidecar(self, size: int) -> None:
        try:
            os.ftruncate(self._sidecar_fd, size)
            self._sidecar_size = size
        except OSError:
            pass  # the original error is re-raised by the caller and warned about there

    def _write_remote(self, layer: str, kind: str, step: int, payload: bytes) -> None:
        """Gather the step's records; at its commit, put them as one event-file object."""
        if self._stamp is None:
            self._stamp, self._pending = new_stamp(), {}
            self._sidecar_name, self._step_sidecar = runfolder.sidecar_file_name(self._stamp, self), []
            self._step_records = [tfrecord(event_pb2.Event(wall_time=self._stamp, file_version="brain.Event:2").SerializeToString())]
            restart = self._restart
            if restart is None and (self._restart_own or (self._last_step is not None and step <= self._last_step)):
                restart = step
            if restart is not None:
                self._step_records.append(self._restart_mark(restart))
        if not self._use_sidecar:
            self._step_records.append(self._event(step, record_summary(layer, kind, payload)))
        elif kind != fmt.KIND_COMMIT:
            self._pending.setdefault(layer, {})[kind] = self._stored(payload)
        if kind != fmt.KIND_COMMIT:
            return
        if self._use_sidecar:
            self._step_records += self._step_events(step, payload)
        data, records, stamp = b"".join(self._step_records), b"".join(self._step_sidecar), self._stamp
        self._step_records, self._step_sidecar, self._stamp = [], [], None
        # StorageError: the step is lost, the next one starts afresh. The sidecar goes first: an
        # event object names only bytes that are there.
        if records:
            storage.put(storage.join(self.logdir, self._sidecar_name), records)
        path = storage.join(self.logdir, runfolder.own_file_name(stamp, self))
        storage.put(path, data)
        self._path = path
        self._last_step, self._restart, self._restart_own = int(step), None, False

    @staticmethod
    def _restart_mark(step: int) -> bytes:
        start = event_pb2.Event(wall_time=time.time(), step=int(step), session_log=event_pb2.SessionLog(status=event_pb2.SessionLog.START))
        return tfrecord(start.SerializeToString()) * 2

    def _append_restart(self, step: int) -> None:
        """TensorBoard's own restart mark, a SessionLog.START at `step`: the Python loader then drops
        every record of the run at `step` and after that it read before (as the Rust loader does
        tag by tag when a step repeats), so both show only this writer's version of those steps.
        Written twice: the first START of a run is not taken as a restart."""
        self._append(self._restart_mark(step))

    def flush(self) -> None:
        """Make what was written durable; our own file's last whole step is now its end."""
        if self._fd is None:
            return
        try:
            if self._sidecar_fd is not None:  # before the references to it
                os.fsync(self._sidecar_fd)
            os.fsync(self._fd)
            if self._own:
                self._good = os.fstat(self._fd).st_size
            self._sidecar_good = self._sidecar_size
        except OSError:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Drop the step being written: readers would not show it, and a full disk wants the space."""
        self._stamp, self._pending = None, {}
        if self._fd is not None and self._own:
            self._cut(self._good)
        if self._sidecar_fd is not None:  # ours alone, also beside a shared event file
            self._cut_sidecar(self._sidecar_good)

    def _cut(self, size: int) -> None:
        try:
            os.ftruncate(self._fd, size)
        except OSError:
            pass  # the original error is re-raised by the caller and warned about there

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        self._close_fd()
        if self._sidecar_fd is not None:
            os.close(self._sidecar_fd)
            self._sidecar_fd = None
        runfolder.unregister(self)
