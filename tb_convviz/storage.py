"""Where logs live: a local folder or an object-store URL (``s3://``, ``gs://``), behind one layer.

Local paths keep the plain `os` calls the writer's tolerances rest on (O_APPEND, ftruncate back
to the last whole step, fsync). Every URL goes through fsspec: TensorBoard's own gfile hands every
protocol but s3 to fsspec already, fsspec reads a byte range of an object in one request
(`cat_file(path, start, end)`), and s3fs and gcsfs are its well-kept S3 and GCS back ends, so one
layer serves the writer, `load()`, the plugin's sidecar reads and the command-line tools.

S3 settings come from the usual places: credentials from AWS_* environment variables (or any
other source botocore reads), the endpoint from AWS_ENDPOINT_URL (botocore reads it) or
S3_ENDPOINT (the variable TensorBoard's own S3 reader uses), so one setting serves both. GCS
credentials come from where gcsfs looks (Application Default Credentials and the like), and a GCS
emulator is named by STORAGE_EMULATOR_HOST, as for Google's own clients.
"""
from __future__ import annotations

import os
import posixpath
from typing import Any, Union

PathLike = Union[str, os.PathLike]

# An object store that stops answering must cost a step's write a few seconds, not minutes:
# botocore's defaults (60 s connect timeout, 5 attempts) would hold the background writer, and
# then training, for as long.
_S3_CONFIG = {"connect_timeout": 3, "read_timeout": 20, "retries": {"max_attempts": 2, "mode": "standard"}}
_EXTRA = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}


class StorageError(OSError):
    """An object store that could not be reached or did not take a write; the message names the
    logdir and the failure's type only, so that a bucket failing step after step is one warning."""


def is_remote(path: PathLike) -> bool:
    """Whether `path` is a URL to an object store rather than a local path."""
    text = os.fspath(path)
    return "://" in text and not text.startswith("file://")


def local(path: PathLike) -> str:
    """A local path as a string (a ``file://`` URL loses its scheme)."""
    text = os.fspath(path)
    return text[len("file://"):] if text.startswith("file://") else text


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec file system, path within it) for an object-store URL. ValueError names the extra to
    install when the protocol's library is missing."""
    import fsspec

    protocol = url.split("://", 1)[0]
    options: dict[str, Any] = {"use_listings_cache": False}  # a run's files change while it is read
    if protocol in ("s3", "s3a"):
        options["config_kwargs"] = _S3_CONFIG
        # Named here, not left to botocore, so that fsspec's cache of file systems (keyed by these
        # options) never hands out one that talks to an endpoint the environment no longer names.
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("S3_ENDPOINT")
        if endpoint:
            options["endpoint_url"] = endpoint if "://" in endpoint else f"https://{endpoint}"
    emulator = os.environ.get("STORAGE_EMULATOR_HOST", "") if protocol in ("gs", "gcs") else ""
    try:
        if emulator not in ("", "default"):  # "default": Google's endpoint, as gcsfs reads it
            return _gcs_emulator(url, emulator, options)
        return fsspec.core.url_to_fs(url, **options)
    except (ImportError, ValueError) as e:
        extra = _EXTRA.get(protocol)
        hint = f": pip install 'tb_convviz[{extra}]'" if extra else ""
        raise ValueError(f"cannot open {url!r} ({e}){hint}") from e


def _gcs_emulator(url: str, host: str, options: dict[str, Any]) -> tuple[Any, str]:
    """gcsfs against a GCS emulator named by STORAGE_EMULATOR_HOST, the variable Google's own
    clients read. Anonymous, as google-cloud-storage is against an emulator. gcsfs's JSON-API class,
    not the default one: that one first asks a bucket's layout over gRPC, which an emulator does not
    speak, and waits 60 s for it on every call (the answer is not cached when the ask fails)."""
    from gcsfs.core import GCSFileSystem

    endpoint = host if "://" in host else f"http://{host}"
    fs = GCSFileSystem(endpoint_url=endpoint, token="anon", **options)
    return fs, fs._strip_protocol(url)


def join(base: PathLike, *parts: str) -> str:
    """`os.path.join` for local paths, '/' for URLs."""
    text = os.fspath(base)
    if is_remote(text):
        return posixpath.join(text.rstrip("/"), *parts)
    return os.path.join(local(text), *parts)


def listdir(folder: PathLike) -> list[str]:
    """The names (not paths) of the files in `folder`; OSError when it cannot be listed."""
    text = os.fspath(folder)
    if not is_remote(text):
        return os.listdir(local(text))
    fs, path = filesystem(text)
    try:
        return [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    except FileNotFoundError:
        return []
    except Exception as e:  # noqa: BLE001 - botocore's and aiohttp's errors are not OSErrors
        raise StorageError(f"cannot list {text}: {type(e).__name__}") from e


def isdir(folder: PathLike) -> bool:
    """Whether `folder` exists as a folder (for a URL: holds any object under it)."""
    text = os.fspath(folder)
    if not is_remote(text):
        return os.path.isdir(local(text))
    fs, path = filesystem(text)
    try:
        return bool(fs.ls(path, detail=False))
    except FileNotFoundError:
        return False


def read_range(path: PathLike, start: int, length: int) -> bytes:
    """`length` bytes of a file from `start` (fewer when the file is shorter): one ranged GET on
    an object store, one pread on a local file."""
    text = os.fspath(path)
    if not is_remote(text):
        with open(local(text), "rb", buffering=0) as f:
            return os.pread(f.fileno(), length, start)
    fs, inner = filesystem(text)
    return fs.cat_file(inner, start=start, end=start + length)


def read_bytes(path: PathLike) -> bytes:
    """A whole file."""
    text = os.fspath(path)
    if not is_remote(text):
        with open(local(text), "rb") as f:
            return f.read()
    fs, inner = filesystem(text)
    return fs.cat_file(inner)


def put(path: PathLike, data: bytes) -> None:
    """Write a whole object (an object store has no append); StorageError on failure."""
    text = os.fspath(path)
    fs, inner = filesystem(text)
    try:
        fs.pipe_file(inner, data)
    except Exception as e:  # noqa: BLE001 - botocore's and aiohttp's errors are not OSErrors
        raise StorageError(f"cannot write to {posixpath.dirname(text)}: {type(e).__name__}") from e


class URLPath(str):
    """An object-store URL with a Path's `name` and `stem`, so code that names local files (a
    checkpoint's step from its file name, a progress line) names remote ones too."""

    @property
    def name(self) -> str:
        return posixpath.basename(self)

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]


def glob(pattern: PathLike) -> list[str]:
    """Files matching a glob pattern (``**`` recurses); for a remote pattern, `URLPath`s."""
    import glob as local_glob

    text = os.fspath(pattern)
    if not is_remote(text):
        return [p for p in local_glob.glob(local(text), recursive=True) if os.path.isfile(p)]
    protocol = text.split("://", 1)[0]
    fs, inner = filesystem(text)
    found = fs.glob(inner, detail=True) if any(c in inner for c in "*?[") else ({inner: fs.info(inner)} if fs.exists(inner) else {})
    return sorted(URLPath(f"{protocol}://{p}") for p, info in found.items() if info.get("type") == "file")
