"""A worker thread that runs the callback's analyses while training goes on.

Two slots: one snapshot being analysed and one waiting. A `submit` that finds both taken waits
for a slot rather than drop an epoch, and says once that analysis is slower than training.
"""
from __future__ import annotations

import queue
import threading
from typing import Callable, Generic, Optional, TypeVar

Job = TypeVar("Job")

_STOP = object()


class BackgroundWorker(Generic[Job]):
    """Runs `run(job)` for each submitted job, in order, on one daemon thread started lazily.

    `run` must not raise (the callback turns its failures into warnings); anything that escapes
    is handed to `on_error` so the thread survives.
    """

    def __init__(self, run: Callable[[Job], None], on_slow: Callable[[], None], on_error: Callable[[BaseException], None]):
        self._run = run
        self._on_slow = on_slow
        self._on_error = on_error
        self._waiting: queue.Queue = queue.Queue(maxsize=1)
        self._thread: Optional[threading.Thread] = None

    def submit(self, job: Job) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="tb_convviz-worker", daemon=True)
            self._thread.start()
        try:
            self._waiting.put_nowait(job)
        except queue.Full:
            self._on_slow()
            self._waiting.put(job)

    def flush(self) -> None:
        """Wait until every submitted job has run."""
        if self._thread is not None:
            self._waiting.join()

    def stop(self) -> None:
        """Run what is pending, then end the thread."""
        if self._thread is not None:
            self._waiting.put(_STOP)
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while True:
            job = self._waiting.get()
            try:
                if job is _STOP:
                    return
                self._run(job)
            except BaseException as e:  # noqa: BLE001 - the worker must outlive any one job
                self._on_error(e)
            finally:
                self._waiting.task_done()
