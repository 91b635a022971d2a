"""Writes convviz records as TensorBoard blob-sequence summaries, in an event file of our own.

Blob sequences (not plain tensors) let a reader list every step cheaply and fetch one step's
bytes alone, which keeps dashboard routes fast however many epochs were logged.

The event file is written here rather than through TensorBoard's EventFileWriter because, without
TensorFlow, that one checksums every byte in pure Python (~0.35 s per MB, seen here): longer than
all of convviz's own work for a ResNet-18 log. The `crc32c` package does it in C; the framing is
TFRecord's, which every TensorBoard loader reads.
"""
from __future__ import annotations

import os
import socket
import struct
import time
from typing import Any, BinaryIO, Optional, Union

import crc32c
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2

from tb_convviz import format as fmt


def record_summary(layer: str, kind: str, payload: bytes) -> summary_pb2.Summary:
    """One summary value holding `payload` as a length-1 blob sequence."""
    metadata = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name=fmt.PLUGIN_NAME, content=fmt.plugin_content(kind)
        ),
        data_class=summary_pb2.DATA_CLASS_BLOB_SEQUENCE,
    )
    tensor = tensor_pb2.TensorProto(
        dtype=types_pb2.DT_STRING,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]),
        string_val=[payload],
    )
    return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=fmt.tag_for(layer, kind), metadata=metadata, tensor=tensor)])


def _masked_crc(data: bytes) -> bytes:
    x = crc32c.crc32c(data)
    return struct.pack("<I", (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def tfrecord(data: bytes) -> bytes:
    """TFRecord framing: length, its masked CRC-32C, the data, its masked CRC-32C."""
    header = struct.pack("<Q", len(data))
    return header + _masked_crc(header) + data + _masked_crc(data)


class RecordWriter:
    """Appends records to a new event file in a log dir, or in a torch SummaryWriter's log dir.

    A failed write (a full disk) is rolled back to the last complete record, so the file stays
    readable and later steps append cleanly once space is back.
    """

    def __init__(self, target: Union[str, os.PathLike, Any]):
        if isinstance(target, (str, os.PathLike)):
            logdir = os.fspath(target)
        elif hasattr(target, "get_logdir"):  # a torch.utils.tensorboard.SummaryWriter: share its run
            logdir = target.get_logdir()
        else:
            raise TypeError(
                f"log_dir_or_summary_writer must be a path or a torch SummaryWriter, not {type(target).__name__}"
            )
        try:
            os.makedirs(logdir, exist_ok=True)
        except OSError as e:
            raise ValueError(f"log_dir {logdir!r} is not writable: {e}") from e
        if not os.access(logdir, os.W_OK | os.X_OK):
            raise ValueError(f"log_dir {logdir!r} is not writable")
        self.logdir = logdir
        self._file: Optional[BinaryIO] = None  # opened at the first record: a run that never logs leaves no file
        self._good = 0

    def _open(self) -> BinaryIO:
        if self._file is None:
            name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}.{id(self)}.convviz"
            self._file = open(os.path.join(self.logdir, name), "ab")
            self._file.write(tfrecord(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString()))
            self._file.flush()
            self._good = self._file.tell()
        return self._file

    def _append(self, event: event_pb2.Event) -> None:
        self._open().write(tfrecord(event.SerializeToString()))

    def write(self, layer: str, kind: str, step: int, payload: bytes) -> None:
        try:
            self._append(event_pb2.Event(wall_time=time.time(), step=int(step), summary=record_summary(layer, kind, payload)))
        except OSError:
            self._rollback()
            raise

    def flush(self) -> None:
        if self._file is None:
            return
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._good = self._file.tell()
        except OSError:
            self._rollback()
            raise

    def _rollback(self) -> None:
        """Drop a partly written record; a reader would otherwise stop at it for good."""
        if self._file is None:
            return
        try:
            self._file.seek(self._good)
            self._file.truncate(self._good)
        except (OSError, ValueError):
            pass  # the original error is re-raised by the caller and warned about there

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
