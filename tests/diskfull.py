"""A disk that fills up in the middle of a write, for the tests of what a step's failed write leaves."""
from __future__ import annotations

import os
from typing import Callable


def writes_cut_short(fd: Callable[[], int]) -> Callable[[int, bytes], int]:
    """An `os.write` that writes half of what it is given to the file `fd()` names and then fails
    as a full disk does (ENOSPC); every other file is written whole."""
    real_write = os.write

    def write(target: int, data: bytes) -> int:
        if target != fd():
            return real_write(target, data)
        if len(data) > 1:
            return real_write(target, data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    return write
