"""The one lazy path to a record's bytes, for every reader: `load()`, the plugin's routes under
either TensorBoard loader, `export-projector` and `log-checkpoints`' resume.

TensorBoard hands a reader each record's event payload: the record itself (logs written before
sidecars, small records) or a reference into a sidecar file of its run folder (`schema.sidecar`).
A reference is fetched here with one ranged read (a pread locally, a ranged GET in an object
store: `storage`), checked against its length and CRC-32C, and kept in a byte-bounded LRU, so
what a process holds follows what is looked at, not what was logged.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Optional, Union

from tb_convviz import storage
from tb_convviz.read.memo import Memo
from tb_convviz.read.run_folders import RunFolders
from tb_convviz.schema import sidecar

_logger = logging.getLogger(__name__)

RECORD_CACHE_BYTES = 64 * 1024 * 1024  # a few layers' every epoch: the slider moves without a read
_PREFETCHERS = 4  # reads in flight while warming: each waits on the disk or the bucket, not the CPU


class RecordStore:
    """Fetches the records that references point to, in their runs' folders: under `logdir` (where
    TensorBoard's run names are relative to; "." is the logdir itself), or under the folders of a
    `--logdir_spec` (`RunFolders`). A reader with neither reads inline records only."""

    def __init__(self, logdir: Union[str, os.PathLike, RunFolders, None], cache_bytes: int = RECORD_CACHE_BYTES):
        self.folders = logdir if isinstance(logdir, RunFolders) else RunFolders.of_logdir(logdir)
        self.logdir = self.folders.logdir
        self._cache: Memo[bytes] = Memo(max_bytes=cache_bytes, size=len)
        self._prefetcher: Optional[ThreadPoolExecutor] = None

    def record_bytes(self, run: str, payload: bytes, keep: bool = True) -> bytes:
        """The record an event payload holds or points to; ValueError says why it cannot be had
        (a damaged reference, a sidecar missing, cut short or changed). `keep=False` reads it past
        the cache (a record wanted for its header alone, which the reader keeps apart)."""
        ref = sidecar.parse_reference(payload)
        if ref is None:
            return payload
        # Almost always one folder; a run name that several `--logdir_spec` folders could give is
        # the one whose sidecar holds the record (its name is unique to a writer, its CRC checked).
        paths = [storage.join(folder, ref.file) for folder in self.folders.candidates(run)]

        def fetch() -> bytes:
            for path in paths:
                try:
                    data = storage.read_range(path, ref.offset, ref.length)
                except FileNotFoundError:
                    continue
                except Exception as e:  # noqa: BLE001 - an object store's errors are not all OSErrors
                    raise ValueError(f"its sidecar file {ref.file} cannot be read ({type(e).__name__}: {e})") from e
                return sidecar.check(ref, data)
            raise ValueError(f"its sidecar file {ref.file} is missing")

        key = (*paths, ref.offset, ref.length, ref.crc)
        return self._cache.get_or_compute(key, fetch) if keep or key in self._cache else fetch()

    def prefetch(self, reads: Iterable[Callable[[], object]]) -> None:
        """Run `reads` in the background (each fetches a record through `record_bytes`), so that
        moving the epoch slider finds them cached; a failed one costs only the later miss."""
        if self._prefetcher is None:
            self._prefetcher = ThreadPoolExecutor(_PREFETCHERS, thread_name_prefix="convviz-prefetch")
        for read in reads:
            self._prefetcher.submit(self._quietly, read)

    @staticmethod
    def _quietly(read: Callable[[], object]) -> None:
        try:
            read()
        except Exception as e:  # noqa: BLE001 - a failed warm-up costs only the later cache miss
            _logger.warning("convviz: background read of a record failed (%s: %s)", type(e).__name__, e)

    def wait(self) -> None:
        """Wait for the background reads submitted so far (for tests and benchmarks)."""
        if self._prefetcher is not None:
            self._prefetcher.shutdown(wait=True)
            self._prefetcher = None
