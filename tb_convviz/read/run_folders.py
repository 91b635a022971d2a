"""Which folder a TensorBoard run name stands for, so that a run's sidecar records are found.

Under ``--logdir`` a run is named by its folder's path relative to the logdir ("." for the logdir
itself). Under ``--logdir_spec name:/path,...`` TensorBoard's Python loader (the only one it uses
there: ``--load_fast`` falls back to it) adds each folder's runs under the folder's name, as
``name/relative path`` ("name/." for the folder itself), and those of a folder given without a
name as under ``--logdir``. The folders are read from the flags with TensorBoard's own parser, so
that they are the folders it reads (paths made absolute, symlinks resolved).

A run name is read relative to the folder it names and only there: a part ".." or an absolute
name stands for no folder, so nothing outside the folders the user named is ever read.
"""
from __future__ import annotations

import os
import re
from typing import Any, NamedTuple, Optional, Union

from tb_convviz import storage

_SEPARATORS = re.compile(r"[/\\]")  # os.path.join's, on every platform a run name may come from


class Root(NamedTuple):
    """A folder the user named, and the name its runs are listed under (None: by path alone)."""

    folder: str
    name: Optional[str]


class RunFolders(NamedTuple):
    """The folders TensorBoard reads runs from (hashable: it keys caches of what was read there)."""

    roots: tuple[Root, ...]

    @classmethod
    def of_logdir(cls, logdir: Union[str, os.PathLike, None]) -> "RunFolders":
        """The runs of one logdir (None or "": no folder, so inline records only)."""
        return cls((Root(os.fspath(logdir), None),) if logdir else ())

    @classmethod
    def of_logdir_spec(cls, spec: str) -> "RunFolders":
        """The runs of a ``--logdir_spec``, parsed as TensorBoard parses it."""
        from tensorboard.backend.event_processing.data_ingester import _parse_event_files_spec

        return cls(tuple(Root(folder, name) for folder, name in _parse_event_files_spec(spec).items()))

    @classmethod
    def of_tensorboard(cls, context: Any) -> "RunFolders":
        """The runs a TensorBoard plugin's `TBContext` serves: its logdir, or its flags' spec."""
        if context.logdir:
            return cls.of_logdir(context.logdir)
        spec = getattr(context.flags, "logdir_spec", None)
        return cls.of_logdir_spec(spec) if spec else cls(())

    @property
    def logdir(self) -> Optional[str]:
        """The one logdir, when the runs come from one named by path alone (`of_logdir`)."""
        return self.roots[0].folder if len(self.roots) == 1 and self.roots[0].name is None else None

    def candidates(self, run: str) -> list[str]:
        """The folders `run` may stand for, latest given first (a run two folders give is the one
        TensorBoard added last). ValueError when there is none."""
        if not self.roots:
            raise ValueError("the record is kept in a sidecar file, and this reader was not told the logdir")
        found = []
        for root in reversed(self.roots):
            relative = _relative_to(run, root.name)
            if relative is not None and _inside(relative):
                found.append(root.folder if relative in ("", ".") else storage.join(root.folder, relative))
        if not found:
            raise ValueError(f"run {run!r} is not a folder under the logdir TensorBoard was given (or its --logdir_spec's)")
        return found


def _relative_to(run: str, name: Optional[str]) -> Optional[str]:
    """`run`'s path under a root listed as `name` (None: `run` is not one of its runs)."""
    if name is None:
        return run
    if run == name:
        return ""
    return run[len(name) + 1:] if run.startswith(name) and run[len(name):len(name) + 1] in ("/", "\\") else None


def _inside(relative: str) -> bool:
    """Whether a relative run path stays inside its root: no "..", not absolute."""
    return not os.path.isabs(relative) and not os.path.splitdrive(relative)[0] and ".." not in _SEPARATORS.split(relative)
