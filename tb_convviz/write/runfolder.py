"""Who else writes convviz records into a run folder: live writers (this process's, or another
process's on this host) and dead ones (a crashed or finished earlier job).

A second live writer is a mistake a user should hear of at once: its records and the first's
hide each other. A dead one means this writer restarts the run, which readers must be told (see
`writer.RecordWriter.restart`), or TensorBoard's Python loader keeps showing the dead writer's
records of the steps logged again. convviz's own event files name their host and process, so no
lock file is needed.
"""
from __future__ import annotations

import os
import socket
import weakref
from typing import Any

from tb_convviz import storage
from tb_convviz.schema.sidecar import SIDECAR_SUFFIX

SUFFIX = ".convviz"
_PREFIX = "events.out.tfevents."

_open_writers: "weakref.WeakSet[Any]" = weakref.WeakSet()  # RecordWriters of this process not yet closed


def own_file_name(stamp: float, owner: object) -> str:
    """The name of a convviz event file: sorted by time like TensorBoard's, then host and process."""
    return f"{_PREFIX}{stamp:.6f}.{socket.gethostname()}.{os.getpid()}.{id(owner)}{SUFFIX}"


def sidecar_file_name(stamp: float, owner: object) -> str:
    """The name of a writer's sidecar file (`schema.sidecar`): beside its event files, named alike
    but for what TensorBoard's loaders look for, so they leave it alone."""
    return f"convviz.{stamp:.6f}.{socket.gethostname()}.{os.getpid()}.{id(owner)}{SIDECAR_SUFFIX}"


def _writer_of(name: str) -> tuple[str, int, str]:
    """(host, pid, writer id) from an `own_file_name`; ("", 0, "") for any other name."""
    if not (name.startswith(_PREFIX) and name.endswith(SUFFIX)):
        return "", 0, ""
    head, pid, owner = name[len(_PREFIX) : -len(SUFFIX)].rsplit(".", 2)
    host = head.split(".", 2)[-1]
    return (host, int(pid), owner) if pid.isdigit() else ("", 0, "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _same_folder(a: str, b: str) -> bool:
    if storage.is_remote(a) or storage.is_remote(b):
        return a.rstrip("/") == b.rstrip("/")
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def neighbours(logdir: str, me: object) -> tuple[int, int]:
    """(live, dead): other convviz writers of `logdir`, by their event files and this process's
    open writers that have written (one whose first log failed, still referenced in a notebook,
    writes nothing). Another host's files count as dead: their process cannot be asked."""
    live = sum(1 for w in list(_open_writers) if w is not me and w.path and _same_folder(w.logdir, logdir))
    dead = 0
    try:
        names = storage.listdir(logdir)
    except OSError:  # an object store that does not answer now: the first write will say so
        return live, dead
    here = socket.gethostname()
    ours = {_writer_of(os.path.basename(w.path)) for w in list(_open_writers) if w.path}  # counted above
    # A writer to an object store leaves one file per step: a writer counts once, by (host, pid, id).
    writers = {_writer_of(name) for name in names} - ours - {("", 0, "")}
    for host, pid, _ in writers:
        if host == here and pid != os.getpid() and _alive(pid):
            live += 1
        else:
            dead += 1
    return live, dead


def register(writer: Any) -> None:
    _open_writers.add(writer)


def unregister(writer: Any) -> None:
    _open_writers.discard(writer)
