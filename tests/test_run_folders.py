"""A run name TensorBoard gives under `--logdir_spec` resolves to the folder TensorBoard read it
from, and nothing a log holds makes the record store read outside the folders the user named."""
from __future__ import annotations

from pathlib import Path

import pytest
from tensorboard import program
from tensorboard.backend.event_processing.data_ingester import LocalDataIngester
from tensorboard.plugins import base_plugin
from tensorboard.summary.writer.event_file_writer import EventFileWriter

from tb_convviz import storage
from tb_convviz.read.run_folders import RunFolders
from tb_convviz.read.store import RecordStore
from tb_convviz.schema import sidecar

RECORD = b"a record of filters" * 100


def _runs(root: Path, *folders: str) -> Path:
    """`root` with an event file in each of `folders` ("." is `root` itself): a run each."""
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
        EventFileWriter(str(root / folder)).close()
    return root


def _tensorboard_runs(**flags) -> tuple[dict[str, str], RunFolders]:
    """{run: folder} as TensorBoard's own loader lists them for `flags`, and what the plugin makes
    of the same flags."""
    tb = program.TensorBoard()
    tb.configure(reload_interval=0, reload_task="blocking", **flags)
    ingester = LocalDataIngester(tb.flags)
    ingester.start()
    context = base_plugin.TBContext(logdir=tb.flags.logdir, flags=tb.flags)
    return ingester.deprecated_multiplexer.RunPaths(), RunFolders.of_tensorboard(context)


def _sidecar_in(folder: Path) -> bytes:
    """A sidecar file in `folder` holding RECORD, and the event payload that points at it."""
    folder.mkdir(parents=True, exist_ok=True)
    name = "convviz.1.host.1.1" + sidecar.SIDECAR_SUFFIX
    (folder / name).write_bytes(RECORD)
    return sidecar.reference(name, 0, RECORD)


def test_each_run_resolves_to_the_folder_tensorboard_read_it_from(tmp_path):
    a = _runs(tmp_path / "a", ".", "x", "x/y")
    b = _runs(tmp_path / "b", "z")
    read, folders = _tensorboard_runs(logdir_spec=f"first:{a},second:{b}")
    assert sorted(read) == ["first/.", "first/x", "first/x/y", "second/z"]
    for run, folder in read.items():
        assert folders.candidates(run) == [folder], run
    assert folders.logdir is None


def test_a_folder_given_without_a_name_lists_its_runs_as_under_logdir(tmp_path):
    tmp_path = tmp_path.resolve()  # as TensorBoard's parser gives a spec's folders
    a = _runs(tmp_path / "a", "x")
    b = _runs(tmp_path / "b", "z")
    read, folders = _tensorboard_runs(logdir_spec=f"named:{a},{b}")
    assert sorted(read) == ["named/x", "z"]
    for run, folder in read.items():
        assert folder in folders.candidates(run), run
    # "named/x" could also be a run of b, given later: the record is read where its sidecar is.
    assert folders.candidates("named/x") == [str(b / "named" / "x"), str(a / "x")]
    assert RecordStore(folders).record_bytes("named/x", _sidecar_in(a / "x")) == RECORD
    read, folders = _tensorboard_runs(logdir=str(b))
    assert {run: folders.candidates(run) for run in read} == {"z": [str(b / "z")]}
    assert folders.logdir == str(b)


def test_a_crafted_run_or_reference_reads_nothing_outside_the_named_folders(tmp_path, monkeypatch):
    named = tmp_path / "team" / "a"
    payload = _sidecar_in(named / "run")
    assert _sidecar_in(tmp_path / "outside") == payload  # the same record, planted outside
    read: list[str] = []
    real_read = storage.read_range
    monkeypatch.setattr(storage, "read_range", lambda path, *a: read.append(path) or real_read(path, *a))
    spec = RecordStore(RunFolders.of_logdir_spec(f"a:{named}"))
    assert spec.record_bytes("a/run", payload) == RECORD
    plain = RecordStore(named)
    assert plain.record_bytes("run", payload) == RECORD
    for store, run in [(spec, "a/../../outside"), (spec, "a/run/../../../outside"), (spec, "../outside"),
                       (spec, f"a/{tmp_path / 'outside'}"), (spec, "outside"), (spec, "b/run"),
                       (plain, "../../outside"), (plain, str(tmp_path / "outside"))]:
        with pytest.raises(ValueError, match="not a folder under the logdir"):
            store.record_bytes(run, payload)
    for name in ("../../outside/convviz.1.host.1.1.records", f"{tmp_path}/outside/x.records"):
        with pytest.raises(ValueError, match="not a sidecar file of its run folder"):
            spec.record_bytes("a/run", sidecar.REFERENCE_MAGIC + payload[4:24] + name.encode())
    assert len(read) == 2 and all(Path(path).resolve().parent == (named / "run").resolve() for path in read)
