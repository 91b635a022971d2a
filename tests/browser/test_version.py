"""The tab says which tb_convviz serves it and which wrote the run shown, and gives notice of a log
written in a newer format than it reads, against a real TensorBoard process."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import torch
from tensorboard.compat.proto import event_pb2

import tb_convviz
from conftest import grid_shows, opened_tab, served_runs
from models import two_conv_net
from tb_convviz.schema import format as fmt
from tb_convviz.write.writer import record_summary, tfrecord
from tbserver import get_json, tensorboard, wait_for
from training import one_thread, train_and_log

OLDER_WRITER = "0.0.9"
FUTURE_WRITER = "9.0.0"


def write_future_run(run_dir: Path) -> None:
    """A run whose records a later tb_convviz wrote in a format this one does not read."""
    content = json.dumps({"version": fmt.FORMAT_VERSION + 1, "kind": fmt.KIND_FILTERS, "writer": FUTURE_WRITER})
    summary = record_summary("0", fmt.KIND_FILTERS, b"")
    summary.value[0].metadata.plugin_data.content = content.encode()
    run_dir.mkdir(parents=True)
    event = event_pb2.Event(wall_time=time.time(), step=0, summary=summary).SerializeToString()
    (run_dir / "events.out.tfevents.9999999999.future").write_bytes(tfrecord(event))


@pytest.fixture(scope="module")
def version_tab(browser: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, list]]:
    """The tab over a run written now, one written by an older tb_convviz and one in a newer format."""
    root = tmp_path_factory.mktemp("version_logs")
    x, y = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2] * 2)
    with one_thread():
        for run in ("current", "older"):
            torch.manual_seed(0)
            with pytest.MonkeyPatch.context() as patch:
                if run == "older":
                    patch.setattr(fmt, "__version__", OLDER_WRITER)
                train_and_log(root / run, two_conv_net((4, 5), classes=3), (x, y), lambda: [(x, y)], [0, 1], lr=0.3,
                              perturbations=False)
    write_future_run(root / "future")
    with tensorboard(root) as url:
        if not wait_for(lambda: served_runs(url) >= 2, timeout=60):
            raise RuntimeError("tensorboard did not serve both readable runs within 60 s")
        if not wait_for(lambda: get_json(f"{url}/data/plugin/convviz/index")["newer_logs"], timeout=60):
            raise RuntimeError("/index did not list the newer-format run")
        with opened_tab(browser, url) as (frame, errors):
            yield frame, url, errors


def test_the_tab_shows_which_version_serves_it_and_wrote_the_run(version_tab):
    frame, url, errors = version_tab
    index = get_json(f"{url}/data/plugin/convviz/index")
    assert index["version"] == tb_convviz.__version__
    assert {r["run"]: r["writer"] for r in index["runs"]} == {"current": tb_convviz.__version__, "older": OLDER_WRITER}

    grid_shows(frame, "current", "0")
    line = frame.locator("[data-testid=version]")
    assert line.text_content() == f"tb_convviz {tb_convviz.__version__} · run current written by tb_convviz {tb_convviz.__version__}"
    frame.locator("[data-testid=run-picker]").select_option("older")
    grid_shows(frame, "older", "0")
    assert line.text_content() == f"tb_convviz {tb_convviz.__version__} · run older written by tb_convviz {OLDER_WRITER}"
    # Unobtrusive: small and below the views, not in the toolbar's way.
    assert line.evaluate("e => parseFloat(getComputedStyle(e).fontSize)") <= 12
    main_bottom = frame.locator("main.cvz-main").bounding_box()
    assert line.bounding_box()["y"] >= main_bottom["y"] + main_bottom["height"]
    assert errors == []


def test_a_log_in_a_newer_format_gets_a_notice_naming_its_writer(version_tab):
    frame, url, errors = version_tab
    notice = frame.locator("[data-testid=newer-notice]")
    notice.wait_for()
    assert notice.locator("p").all_text_contents() == [
        f"Run future was written by tb_convviz {FUTURE_WRITER} in log format {fmt.FORMAT_VERSION + 1}; this tb_convviz "
        f"({tb_convviz.__version__}) reads format {fmt.FORMAT_VERSION} and leaves those records out: upgrade tb_convviz "
        "and restart TensorBoard to see them."
    ]
    # The run's record is also one of the problems the server lists; the readable runs draw as usual.
    assert [p["run"] for p in get_json(f"{url}/data/plugin/convviz/index")["problems"]] == ["future"]
    assert frame.locator("[data-testid=run-picker] option").all_text_contents() == ["current", "older"]
    assert errors == []
