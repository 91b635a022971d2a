"""Writes convviz records as TensorBoard blob-sequence summaries.

Blob sequences (not plain tensors) let a reader list every step cheaply and fetch one
step's bytes alone, which keeps dashboard routes fast however many epochs were logged.
"""
from __future__ import annotations

import os
import time
from typing import Any, Union

from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter

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


class RecordWriter:
    """Appends records to an event file in a log dir, or to a user's torch SummaryWriter."""

    def __init__(self, target: Union[str, os.PathLike, Any]):
        if isinstance(target, (str, os.PathLike)):
            logdir = os.fspath(target)
            try:
                os.makedirs(logdir, exist_ok=True)
                probe_file = os.path.join(logdir, ".convviz_write_check")
                with open(probe_file, "w"):
                    pass
                os.remove(probe_file)
            except OSError as e:
                raise ValueError(f"log_dir {logdir!r} is not writable: {e}") from e
            self._writer = EventFileWriter(logdir)
            self._owned = True
            self.logdir = logdir
        elif hasattr(target, "_get_file_writer"):
            # A torch.utils.tensorboard.SummaryWriter: share its event file, leave closing to its owner.
            self._writer = target._get_file_writer()
            self._owned = False
            self.logdir = target.get_logdir()
        else:
            raise TypeError(
                f"log_dir_or_summary_writer must be a path or a torch SummaryWriter, not {type(target).__name__}"
            )

    def write(self, layer: str, kind: str, step: int, payload: bytes) -> None:
        event = event_pb2.Event(wall_time=time.time(), step=int(step), summary=record_summary(layer, kind, payload))
        self._writer.add_event(event)

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        if self._owned:
            self._writer.close()
        else:
            self._writer.flush()
