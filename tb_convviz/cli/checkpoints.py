"""Checkpoints saved by other code: which files, where the model's weights are inside, which step.

Checkpoints come in a few layouts: a raw ``state_dict``, Lightning's ``{"state_dict": {"model.x": ...},
"epoch": n, "global_step": s}``, ``{"model": state_dict, "epoch": n}`` (or ``"model_state_dict"``,
the PyTorch tutorial's name). Everything is read on the CPU with ``weights_only=True``: unpickling
runs no code from the file, and tensors are memory-mapped, so opening a checkpoint reads its
small pickle, not its tensors (nor a Lightning checkpoint's optimizer state). A file that needs more (it holds a custom class) is refused with a
message naming the class, unless the caller trusts it (``trust=True`` loads with
``weights_only=False``, which can run arbitrary code).

The step of a checkpoint, with ``step_from="auto"``: its own ``epoch`` entry, else its
``global_step``, else the last number in its file name (``epoch_05.pt`` → 5,
``resnet50_e12.pt`` → 12). The checkpoint's own count comes first because file names are
free-form; ``epoch`` before ``global_step`` because the online callbacks log per epoch
(Lightning's ``epoch`` is its 0-based ``current_epoch``, as `ConvVizCallback` logs it).
"""
from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Sequence, Union, get_args

import numpy as np
import torch
from torch import nn

from tb_convviz import storage

StepSource = Literal["auto", "epoch", "global_step", "name"]
STEP_SOURCES: tuple[str, ...] = get_args(StepSource)
STATE_KEYS = ("state_dict", "model_state_dict", "model")  # where a dict checkpoint keeps the weights
State = dict[str, torch.Tensor]

_NUMBER = re.compile(r"\d+")
_UNSUPPORTED_GLOBAL = re.compile(r"Unsupported global: GLOBAL (\S+)")
# What torch says of a global from a module it never allows (os.system, builtins.eval, ...).
_BLOCKED_GLOBAL = re.compile(r"unsupported GLOBAL (\S+) whose module (\S+) is blocked")


class CheckpointError(Exception):
    """A checkpoint that cannot be logged; the message says why (the caller names the file)."""


@dataclass(frozen=True)
class Checkpoint:
    """A usable checkpoint file and the step it is logged at."""

    path: Path
    step: int


def checkpoint_files(patterns: Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]) -> list[Path]:
    """Files named by paths or glob patterns (``**`` recurses), each once, sorted by path; an
    object-store URL (``s3://bucket/ckpts/*.pt``) gives `storage.URLPath`s."""
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [patterns]
    found: set[Path] = set()
    for pattern in patterns:
        remote = storage.is_remote(pattern)
        found.update(p if remote else Path(p) for p in storage.glob(pattern))
    return sorted(found, key=os.fspath)


def read_checkpoint(path: Union[str, os.PathLike], *, trust: bool = False) -> Any:
    """`torch.load` on the CPU, memory-mapped when the file is in torch's zip format, so that
    opening a checkpoint reads its small pickle and only the tensors that are used later."""
    source: Any = path
    try:
        if storage.is_remote(path):  # an object is fetched whole: there is no memory map of a bucket
            source = io.BytesIO(storage.read_bytes(path))
            zipped = False
        else:
            with open(path, "rb") as f:
                zipped = f.read(4) == b"PK\x03\x04"  # torch's format since 1.6; the rest is a legacy pickle
    except Exception as e:  # noqa: BLE001 - an object store's errors are not all OSErrors
        raise CheckpointError(f"unreadable ({one_line(e)})") from e
    try:
        return torch.load(source, map_location="cpu", weights_only=not trust, mmap=zipped and zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001 - torch.load fails in many ways on a damaged file
        blocked = _BLOCKED_GLOBAL.search(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if blocked:
            raise CheckpointError(
                f"refused as unsafe: unpickling it calls {blocked.group(1)}, and torch's weights-only load blocks "
                f"module {blocked.group(2)}; the file is not damaged, and trusting it would run that call"
            ) from e
        unsupported = _UNSUPPORTED_GLOBAL.search(str(e)) if isinstance(e, pickle.UnpicklingError) else None
        if unsupported:
            raise CheckpointError(
                f"it holds {unsupported.group(1)}, which a weights-only load refuses; "
                "if you trust the file, allow it with trust_checkpoints=True (--trust-checkpoints)"
            ) from e
        if zipped:
            raise CheckpointError(f"a damaged or truncated torch checkpoint ({one_line(e)})") from e
        # The weights-only unpickler's own message on garbage is advice about weights_only.
        detail = "" if isinstance(e, pickle.UnpicklingError) else f" ({one_line(e)})"
        raise CheckpointError(f"not a torch checkpoint{detail}") from e


def _is_state(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def model_state(checkpoint: Any) -> Mapping[str, torch.Tensor]:
    """The weights in a loaded checkpoint: itself when it is a state_dict, else the first of
    STATE_KEYS that holds one (a whole saved module, loaded with trust, gives its state_dict)."""
    if isinstance(checkpoint, nn.Module):
        return checkpoint.state_dict()
    if _is_state(checkpoint):
        return checkpoint
    if isinstance(checkpoint, Mapping):
        for key in STATE_KEYS:
            inner = checkpoint.get(key)
            if isinstance(inner, nn.Module):
                return inner.state_dict()
            if _is_state(inner):
                return inner
    raise CheckpointError(f"no state_dict in it: expected a state_dict or a dict with one of {list(STATE_KEYS)}")


def _entry(checkpoint: Any, key: str) -> Optional[int]:
    value = checkpoint.get(key) if isinstance(checkpoint, Mapping) and not _is_state(checkpoint) else None
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.is_floating_point():
        value = value.item()
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


def checkpoint_step(path: Union[str, os.PathLike], checkpoint: Any, step_from: StepSource = "auto") -> int:
    """The step to log `checkpoint` at (see the module docstring for the order of "auto")."""
    numbers = _NUMBER.findall(Path(path).stem)
    found = {
        "epoch": _entry(checkpoint, "epoch"),
        "global_step": _entry(checkpoint, "global_step"),
        "name": int(numbers[-1]) if numbers else None,
    }
    if step_from == "auto":
        step = next((s for s in found.values() if s is not None), None)
        if step is None:
            raise CheckpointError("no step: no 'epoch' or 'global_step' entry and no number in its name")
        return step
    if step_from not in found:
        raise ValueError(f"step_from must be one of {STEP_SOURCES}, got {step_from!r}")
    if found[step_from] is None:
        what = "number in its name" if step_from == "name" else f"{step_from!r} entry"
        raise CheckpointError(f"no step: no {what}")
    return found[step_from]


def scan(
    paths: Sequence[Path], *, step_from: StepSource = "auto", trust: bool = False
) -> tuple[list[Checkpoint], dict[Path, str]]:
    """(usable checkpoints by step, {path: why skipped}). Opening reads no tensor data (mmap).
    Of files with the same step, the first by path is kept (Lightning's ``last.ckpt`` repeats
    the last epoch)."""
    usable: dict[int, Checkpoint] = {}
    skipped: dict[Path, str] = {}
    for path in paths:
        try:
            checkpoint = read_checkpoint(path, trust=trust)
            model_state(checkpoint)
            step = checkpoint_step(path, checkpoint, step_from)
        except CheckpointError as e:
            skipped[path] = str(e)
            continue
        if step in usable:
            skipped[path] = (f"step {step} is also {usable[step].path.name}, which is logged instead "
                             "(several checkpoints per epoch? step_from='global_step' or --step-from global_step)")
            continue
        usable[step] = Checkpoint(path, step)
    return [usable[s] for s in sorted(usable)], skipped


def match_model(state: Mapping[str, torch.Tensor], model_keys: set[str]) -> State:
    """The part of `state` that names the model's tensors: all of it, or the part under one
    prefix with the prefix removed (Lightning's ``model.``, DataParallel's ``module.``,
    torch.compile's ``_orig_mod.``; a LightningModule may hold a loss with buffers beside its
    model). When no prefix fits exactly, all of it: the strict load then says what differs."""
    if set(state) == model_keys:
        return dict(state)
    prefixes = {key[: i + 1] for key in state for i, c in enumerate(key) if c == "."}
    for prefix in sorted(prefixes, key=len):
        part = {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}
        if set(part) == model_keys:
            return part
    return dict(state)


def load_state(path: Union[str, os.PathLike], model_keys: set[str], *, trust: bool = False) -> State:
    """The model's tensors from a checkpoint file (memory-mapped: read when copied into the model)."""
    return match_model(model_state(read_checkpoint(path, trust=trust)), model_keys)


def read_ahead(path: Union[str, os.PathLike]) -> None:
    """Read a file through once, discarding the bytes, so the page cache holds it when it is
    loaded: run in a thread, the disk or network read overlaps other work without holding the
    GIL (a thread running torch.load itself would: its weights-only unpickler is Python)."""
    if storage.is_remote(path):
        return  # an object is fetched when it is loaded
    buffer = bytearray(1 << 23)
    try:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buffer):
                pass
    except OSError:
        return  # only a hint: loading the file next reports what is wrong with it


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """`model.load_state_dict(state, strict=True)`; a mismatch is a CheckpointError saying which
    names are missing or unexpected and which shapes differ, each list cut short."""
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        problems = [line.strip() for line in str(e).splitlines()[1:] if line.strip()]
        raise CheckpointError("does not match the model: " + "; ".join(_shorten(p, 200) for p in problems[:3])) from e


def _shorten(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def one_line(error: BaseException) -> str:
    """`Type: first line of the message`, cut short: torch's load errors run to paragraphs."""
    lines = str(error).strip().splitlines()
    return _shorten(f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__, 160)
