"""Start a real `tensorboard` process on a free loopback port for end-to-end tests."""
from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence, Union


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str, timeout: float = 10.0):
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.load(response)


@contextlib.contextmanager
def tensorboard(
    logdir: Union[Path, str, Mapping[str, Path]], *, python: str = sys.executable, args: Sequence[str] = (),
    wait_s: float = 60.0, log_dir: Optional[Path] = None,
) -> Iterator[str]:
    """Yield the base URL of a TensorBoard serving `logdir` (a folder or a bucket URL; a mapping
    {name: folder} is given as `--logdir_spec name:folder,...`), once its plugin listing answers.
    Its output goes to a file in `log_dir` (default: beside `logdir`, or its first folder)."""
    if isinstance(logdir, Mapping):
        where = ["--logdir_spec", ",".join(f"{name}:{folder}" for name, folder in logdir.items())]
        beside = Path(next(iter(logdir.values()))).parent
    else:
        where, beside = ["--logdir", str(logdir)], Path(logdir).parent
    port = free_port()
    log = open((log_dir or beside) / f"tensorboard-{port}.log", "w")
    proc = subprocess.Popen(
        [python, "-m", "tensorboard.main", *where, "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"tensorboard exited early; see {log.name}")
            try:
                get_json(base + "/data/plugins_listing", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"tensorboard did not answer in {wait_s}s; see {log.name}")
                time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.3):
    """Poll `predicate()` until it returns a truthy value (TensorBoard loads event files lazily)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
