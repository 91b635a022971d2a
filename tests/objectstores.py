"""Real object-store servers on loopback for the object-store tests: S3 (moto in server mode) and
GCS (gcp-storage-emulator), each started by the tests themselves, stoppable and startable again on
the same port, and named to every client the way a user names a real store: in the environment."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Iterator

from tbserver import free_port

# What a user of a real bucket sets: credentials and the endpoint, in the environment, read by
# botocore (AWS_*), s3fs (through botocore) and TensorBoard's own S3 reader (S3_ENDPOINT).
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


class LoopbackStore:
    """A server on 127.0.0.1 speaking one object store's protocol, on one port for its life."""

    scheme = ""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = None

    def _new_server(self):
        """A server object with start() and stop(), not yet started (neither runs twice)."""
        raise NotImplementedError

    def start(self) -> None:
        self._server = self._new_server()
        self._server.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def env(self) -> dict[str, str]:
        """The variables that point every client (this process's and TensorBoard's) at the server."""
        raise NotImplementedError

    def make_bucket(self, name: str) -> str:
        """A new empty bucket; its URL."""
        raise NotImplementedError


class S3Server(LoopbackStore):
    """moto's S3 in server mode."""

    scheme = "s3"

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        super().__init__()
        self._server_class = ThreadedMotoServer

    def _new_server(self):
        return self._server_class(ip_address="127.0.0.1", port=self.port, verbose=False)

    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint, "S3_ENDPOINT": self.endpoint}

    def make_bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1").create_bucket(Bucket=name)
        return f"s3://{name}"


class GCSServer(LoopbackStore):
    """gcp-storage-emulator (the GCS JSON API, pure Python), its objects in a folder on disk so that
    a restarted server still holds what was written before it stopped."""

    scheme = "gs"

    def __init__(self, data_dir: str) -> None:
        from gcp_storage_emulator.server import create_server

        super().__init__()
        self._create_server = create_server
        self._data_dir = data_dir

    def _new_server(self):
        return self._create_server("127.0.0.1", self.port, in_memory=False, data_dir=self._data_dir)

    def env(self) -> dict[str, str]:
        # STORAGE_EMULATOR_HOST: read by gcsfs and by Google's own clients. TensorBoard's Python
        # loader opens gs:// through fsspec's default gcsfs class, which first asks a bucket's layout
        # over gRPC (no emulator speaks it): GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false turns that off.
        return {"STORAGE_EMULATOR_HOST": self.endpoint, "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}

    def make_bucket(self, name: str) -> str:
        from tb_convviz import storage

        fs, _ = storage.filesystem(f"gs://{name}")
        fs.mkdir(name)
        return f"gs://{name}"


@contextlib.contextmanager
def serving(store: LoopbackStore) -> Iterator[LoopbackStore]:
    """`store` running, its variables in os.environ while it runs (restored after)."""
    # moto's server (werkzeug) and the GCS emulator log every request.
    for name in ("werkzeug", "gcp_storage_emulator"):
        logging.getLogger(name).setLevel(logging.ERROR)
    store.start()
    saved = {k: os.environ.get(k) for k in store.env()}
    os.environ.update(store.env())
    try:
        yield store
    finally:
        store.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
