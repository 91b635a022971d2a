"""Export one layer's filters at one step to TensorBoard's own PROJECTOR tab.

TensorBoard's projector plugin reads, for each run, ``projector_config.pbtxt`` in the run's
folder or in its plugin-assets folder ``<run>/plugins/org_tensorflow_tensorboard_projector/``
(the default here), and follows the config's relative ``tensor_path``, ``metadata_path`` and
``sprite.image_path``, which must stay inside the config's folder. One config lists every
exported (layer, step); each export adds or replaces its own entry.

The plugin reads a run's config once it has seen the run: a TensorBoard already serving the
logdir shows a new export after it is restarted.
"""
from __future__ import annotations

import io
import math
import os
import posixpath
import re
import struct
import warnings
import zlib
from pathlib import Path
from typing import Callable, NamedTuple, Optional, Union

import numpy as np
from google.protobuf import text_format
from tensorboard.plugins.projector import metadata as projector_metadata
from tensorboard.plugins.projector.projector_config_pb2 import ProjectorConfig

from tb_convviz import storage
from tb_convviz.schema import format as fmt
from tb_convviz.schema import records
from tb_convviz.read.reader import Logs, NotFound, load


class ProjectorTensor(NamedTuple):
    """What the projector places: one row per filter."""

    label: str  # what the rows are, for the tensor's name in the tab ("kernels")
    step: int  # the logged step the rows come from
    rows: np.ndarray  # (filters, dims)


TensorSource = Callable[[Logs, str, str, int], ProjectorTensor]

_SPRITE_CELL = 32  # pixels a tile is scaled up to (by whole factors), so 3×3 kernels are visible
_SPRITE_MAX = 8192  # the projector's limit on a sprite's side
# RdBu, the stops of frontend/colormap.js DIVERGING: the tab's grid and the sprite look alike.
_DIVERGING = np.array(
    [[5, 48, 97], [33, 102, 172], [67, 147, 195], [146, 197, 222], [209, 229, 240], [247, 247, 247],
     [253, 219, 199], [244, 165, 130], [214, 96, 77], [178, 24, 43], [103, 0, 31]],
    dtype=np.float64,
)


def kernel_rows(logs: Logs, run: str, layer: str, step: int) -> ProjectorTensor:
    """The flattened raw kernels (filters, in/groups × ∏kernel) of the latest full-kernel record at
    or before `step` (large layers keep full kernels only every few logs)."""
    at = logs.latest_at_or_before(run, layer, fmt.KIND_KERNELS, step)
    kernels = logs.kernels(run, layer, at)
    return ProjectorTensor("kernels", at, kernels.reshape(kernels.shape[0], -1))


def _diverging(values: np.ndarray) -> np.ndarray:
    """Values in [−1, 1] → RGB uint8 (…, 3): blue negative, white 0, red positive."""
    position = (np.clip(values, -1, 1) + 1) / 2 * (len(_DIVERGING) - 1)
    low = np.minimum(position.astype(np.int64), len(_DIVERGING) - 2)
    frac = (position - low)[..., None]
    return np.round(_DIVERGING[low] * (1 - frac) + _DIVERGING[low + 1] * frac).astype(np.uint8)


def tile_images(tiles: np.ndarray) -> np.ndarray:
    """Kernel tiles (F, channels, *kernel) → (F, h, w, 3) uint8 pictures, each filter scaled by its
    own largest |weight| so that 0 is neutral.

    Each channel becomes a plane: a 1-D kernel a row, a 2-D one itself, a 3-D one its depth
    slices left to right. Three channels of a 2-D/3-D kernel are drawn as RGB (grey is 0);
    otherwise the planes are stacked top to bottom in the diverging colours of the tab's grid.
    """
    f, channels = tiles.shape[:2]
    kernel = tiles.shape[2:]
    if len(kernel) == 1:
        planes = tiles[:, :, None, :]
    elif len(kernel) == 2:
        planes = tiles
    else:
        d, h, w = kernel
        planes = tiles.transpose(0, 1, 3, 2, 4).reshape(f, channels, h, d * w)
    scale = np.abs(tiles.reshape(f, -1)).max(axis=1)
    unit = planes / np.where(scale > 0, scale, 1.0).reshape(f, 1, 1, 1)
    if channels == 3 and len(kernel) >= 2:
        return np.round((unit.transpose(0, 2, 3, 1) + 1) / 2 * 255).astype(np.uint8)
    stacked = unit.reshape(f, channels * unit.shape[2], unit.shape[3])
    return _diverging(stacked)


def sprite_sheet(images: np.ndarray) -> Optional[tuple[np.ndarray, tuple[int, int]]]:
    """(F, h, w, 3) pictures → the sheet, one white-padded square cell per filter, ⌈√F⌉ per row,
    and the cell's (width, height); None when even unscaled cells exceed the projector's 8192 px."""
    f, h, w, _ = images.shape
    side = max(h, w)
    per_row = max(1, math.ceil(math.sqrt(f)))
    zoom = min(max(1, _SPRITE_CELL // side), _SPRITE_MAX // (per_row * side))
    if zoom < 1:
        return None
    cell = side * zoom
    big = images.repeat(zoom, axis=1).repeat(zoom, axis=2)
    sheet = np.full((per_row * cell, per_row * cell, 3), 255, dtype=np.uint8)
    top, left = (cell - h * zoom) // 2, (cell - w * zoom) // 2
    for i in range(f):
        r, c = divmod(i, per_row)
        sheet[r * cell + top : r * cell + top + h * zoom, c * cell + left : c * cell + left + w * zoom] = big[i]
    return sheet, (cell, cell)


def png_bytes(image: np.ndarray) -> bytes:
    """An (H, W, 3) uint8 image as a PNG (8-bit RGB, no filtering): zlib is all it takes."""
    height, width, _ = image.shape
    raw = np.concatenate([np.zeros((height, 1), np.uint8), image.reshape(height, width * 3)], axis=1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw.tobytes(), 6)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def metadata_tsv(stats: dict[str, np.ndarray], filters: int) -> str:
    """One header line, then one line per filter: its index and every per-filter statistic."""
    columns = {"filter": np.arange(filters)}
    columns.update({k: v for k, v in stats.items() if v.shape == (filters,)})
    lines = ["\t".join(columns)]
    for i in range(filters):
        lines.append("\t".join(str(v[i]) if v.dtype.kind in "iub" else f"{v[i]:.6g}" for v in columns.values()))
    return "\n".join(lines) + "\n"


def _output_folder(root: Path, run: str, out_dir: Union[str, Path, None]) -> Path:
    """`out_dir` (relative to `root`), or the run's projector assets folder; refused unless it lies
    inside `root` with no symbolic link on the way (a link could point anywhere)."""
    default = Path(run) / projector_metadata.PLUGINS_DIR / projector_metadata.PLUGIN_ASSETS_NAME
    out = Path(os.path.normpath(root / (out_dir if out_dir is not None else default)))
    if os.path.commonpath([out, root]) != str(root):
        raise ValueError(f"output folder {str(out_dir)!r} is outside the logdir {str(root)!r}")
    return out


def _remote_output_folder(root: str, run: str, out_dir: Union[str, Path, None]) -> storage.URLPath:
    """`_output_folder` in an object store (no links there: only the logdir's bounds apply)."""
    scheme, inside = root.split("://", 1)
    inside = "/" + inside.strip("/")
    default = posixpath.join(run, projector_metadata.PLUGINS_DIR, projector_metadata.PLUGIN_ASSETS_NAME)
    out = posixpath.normpath(posixpath.join(inside, os.fspath(out_dir) if out_dir is not None else default))
    if out != inside and not out.startswith(inside + "/"):
        raise ValueError(f"output folder {str(out_dir)!r} is outside the logdir {root!r}")
    return storage.URLPath(f"{scheme}:/{out}")


def _child(folder: Union[Path, str], name: str) -> Union[Path, storage.URLPath]:
    return storage.URLPath(storage.join(folder, name)) if storage.is_remote(folder) else Path(folder) / name


def _make_dirs(root: Path, folder: Path) -> None:
    """Create `folder` under `root`, refusing any part of the way that is a symbolic link."""
    if storage.is_remote(folder):
        return  # an object store has no folders to make
    here = root
    for part in folder.relative_to(root).parts:
        here = here / part
        if here.is_symlink():
            raise ValueError(f"{str(here)!r} is a symbolic link: export-projector writes only inside the logdir, never through a link")
        here.mkdir(exist_ok=True)


def _write(path: Path, data: bytes) -> None:
    """Write a file, never through a symbolic link in its place."""
    if storage.is_remote(path):
        storage.put(path, data)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if path.is_symlink():
            raise ValueError(f"{str(path)!r} is a symbolic link: export-projector writes only inside the logdir, never through a link") from e
        raise
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _add_embedding(
    config_path: Path, name: str, folder: str, shape: tuple[int, ...], cell: Optional[tuple[int, int]]
) -> None:
    """Add (or replace) the embedding `name` in the config, keeping every other export's entry."""
    config = ProjectorConfig()
    try:
        if storage.is_remote(config_path):
            text = storage.read_bytes(config_path).decode("utf-8")
        else:
            text = config_path.read_text(encoding="utf-8") if config_path.exists() and not config_path.is_symlink() else None
    except FileNotFoundError:
        text = None
    if text is not None:
        try:
            text_format.Parse(text, config)
        except (text_format.ParseError, UnicodeDecodeError) as e:
            raise ValueError(f"the projector config {str(config_path)!r} is not one TensorBoard reads ({e}); move it away or fix it") from e
    kept = [e for e in config.embeddings if e.tensor_name != name]
    del config.embeddings[:]
    config.embeddings.extend(kept)
    embedding = config.embeddings.add()
    embedding.tensor_name = name
    embedding.tensor_path = f"{folder}/tensor.tsv"
    embedding.tensor_shape.extend(shape)
    embedding.metadata_path = f"{folder}/metadata.tsv"
    if cell is not None:
        embedding.sprite.image_path = f"{folder}/sprite.png"
        embedding.sprite.single_image_dim.extend(cell)
    _write(config_path, text_format.MessageToString(config).encode("utf-8"))


class Exported(NamedTuple):
    """Where an export's config is, and the step its rows come from (the latest full kernels at or
    before the step asked for)."""

    config: Path
    step: int


def export_projector(
    logdir: Union[str, Path],
    run: str,
    layer: str,
    step: int,
    out_dir: Union[str, Path, None] = None,
    source: TensorSource = kernel_rows,
) -> Exported:
    """Write `layer`'s filters of `run` at `step` (rows from `source`, by default the flattened
    kernels) where TensorBoard's PROJECTOR tab finds them; return the config file's path.

    Writes, in `out_dir` (default the run's projector assets folder, which TensorBoard reads):
    ``projector_config.pbtxt`` (merged: other exports stay) and a folder per export with
    ``tensor.tsv`` (filters × dims), ``metadata.tsv`` (filter index and per-filter statistics) and
    ``sprite.png`` (each filter's kernel tile). Raises NotFound for a run, layer or step the logs
    do not hold, ValueError for an `out_dir` outside `logdir` (relative paths are taken from
    `logdir`) or a symbolic link on the way (nothing is written outside it, nor through a link).
    """
    remote = storage.is_remote(logdir)
    root = os.fspath(logdir).rstrip("/") if remote else Path(os.path.realpath(logdir))
    logs = load(str(root))
    if run not in logs.runs():
        raise NotFound(f"no convviz run {run!r} in {str(logdir)!r}; runs: {logs.runs()}")
    if layer not in logs.layers(run):
        raise NotFound(f"run {run!r} has no layer {layer!r}; layers: {logs.layers(run)}")
    out = _remote_output_folder(root, run, out_dir) if remote else _output_folder(root, run, out_dir)

    tensor = source(logs, run, layer, step)
    filters_record = logs.bundle(run, layer, fmt.KIND_FILTERS, tensor.step)
    stats = {n: filters_record.array(n) for n in records.filter_stat_names(filters_record)}
    folder = re.sub(r"[^A-Za-z0-9_.-]", "_", f"{layer}_{tensor.label}_step{tensor.step}")
    target = _child(out, folder)
    _make_dirs(root, target)
    rows = io.StringIO()
    np.savetxt(rows, tensor.rows, fmt="%.7g", delimiter="\t")
    _write(_child(target, "tensor.tsv"), rows.getvalue().encode("utf-8"))
    _write(_child(target, "metadata.tsv"), metadata_tsv(stats, tensor.rows.shape[0]).encode("utf-8"))
    sprite = sprite_sheet(tile_images(filters_record.array(records.TILES)))
    if sprite is None:
        warnings.warn(f"the tiles of {layer!r} do not fit a projector sprite; none written", stacklevel=2)
    else:
        _write(_child(target, "sprite.png"), png_bytes(sprite[0]))
    config_path = _child(out, projector_metadata.PROJECTOR_FILENAME)
    name = f"{layer} {tensor.label} @ step {tensor.step}"
    _add_embedding(config_path, name, folder, tensor.rows.shape, None if sprite is None else sprite[1])
    return Exported(config_path, tensor.step)
