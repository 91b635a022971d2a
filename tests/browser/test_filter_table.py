"""The Impact view as the table of every declared per-filter column — built-in ones and a user's
own FilterMetric (tests/user_metrics.py, defined outside the package) — with its headers' text and
tooltips, its sort order, its CSV against `logs.to_csv`, a user column's history in the filter
detail, the Similarity and Filter map views' exports, and the notice of records that could not be
read; in headless Chromium against a real TensorBoard serving logs the real callback wrote."""
from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.compat.proto import event_pb2

from conftest import EPOCHS, LAST, RUN_IMPACT, RUNS_2D, answer, choose, grid_shows, open_impact, opened_tab, served_runs
from models import two_conv_net
from tb_convviz.schema import format as fmt
from tb_convviz import load
from tb_convviz.write.writer import record_summary, tfrecord
from tbserver import tensorboard, wait_for
from training import one_thread, train_and_log
from user_metrics import HOYER
from wire import decode_wire


def header(frame, name: str):
    return frame.locator(f'[data-testid=impact-sort][data-metric="{name}"]')


def expected_order(values: np.ndarray, column: dict, reverse: bool) -> list[int]:
    """Filters in the order a header's clicks sort them: the declared `first` end first (the
    better end where none is declared), reversed on the second click; missing values last."""
    first = column.get("first") or {"higher": "high", "lower": "low"}.get(column["better"], "high")
    keys = np.abs(values) if first == "abs" else values
    descending = (first != "low") != reverse
    present = [f for f in range(len(values)) if np.isfinite(keys[f])]
    present.sort(key=lambda f: (-keys[f] if descending else keys[f], f))
    return present + [f for f in range(len(values)) if not np.isfinite(keys[f])]


def test_headers_name_and_explain_built_in_and_user_columns(frame, tensorboard_url):
    open_impact(frame, RUN_IMPACT, "0")
    table = answer(tensorboard_url, f"table?run={RUN_IMPACT}&layer=0&step={LAST}")
    declared = {c["name"]: c for c in table["columns"]}
    assert declared["hoyer"]["group"] == "user" and declared["hoyer"]["label"] == "Hoyer sparsity"
    for name, text in (("d_accuracy", "Δaccuracy"), ("d_loss", "Δloss"), ("hoyer", "Hoyer sparsity"),
                       ("gain.up", "Gain ×2"), ("tuning_frequency", "Pref. frequency (cycles/px)")):
        button = header(frame, name)
        assert button.text_content() == text, name
        assert button.get_attribute("title").startswith(declared[name]["description"]), name
    assert header(frame, "hoyer").get_attribute("title") == "0 = every position active, 1 = one position. Higher is better."
    assert header(frame, "d_accuracy").get_attribute("title").startswith("Change of probe accuracy when the filter is zeroed")
    # One header per group over its columns, in the answer's group order, the user's own last.
    groups = frame.locator("[data-testid=impact-group]")
    assert groups.evaluate_all("gs => gs.map(g => g.dataset.group)") == list(dict.fromkeys(c["group"] for c in table["columns"]))
    user = frame.locator("[data-testid=impact-group][data-group=user]")
    assert user.text_content() == "User" and user.get_attribute("colspan") == str(sum(c["group"] == "user" for c in table["columns"]))
    # Every declared column has its header: nothing in the frontend lists them.
    shown = frame.locator("[data-testid=impact-sort]").evaluate_all("bs => bs.map(b => b.dataset.metric)")
    assert set(shown) == set(declared) - {c["ci"] for c in table["columns"] if c["ci"]}


def test_a_header_click_sorts_by_the_declared_end_first_then_reverses(frame, tensorboard_url):
    rows = open_impact(frame, RUN_IMPACT, "0")
    table = answer(tensorboard_url, f"table?run={RUN_IMPACT}&layer=0&step={LAST}")
    declared = {c["name"]: c for c in table["columns"]}
    view = frame.locator("[data-testid=impact-view]")
    for name in ("hoyer", "d_loss", "gain.down", "cf/no_red"):
        values = decode_wire(table["values"][name])
        header(frame, name).click()
        frame.locator(f'[data-testid=impact-view][data-sort="{name}"][data-reverse=false]').wait_for()
        order = [int(f) for f in rows.evaluate_all("rs => rs.map(r => r.dataset.filter)")]
        assert order == expected_order(values, declared[name], False), name
        shown = [float(v) for v in rows.evaluate_all("rs => rs.map(r => r.dataset.value)")]
        assert shown == [float(values[f]) for f in order]  # the table's values are the route's, float32 exact
        header(frame, name).click()
        frame.locator(f'[data-testid=impact-view][data-sort="{name}"][data-reverse=true]').wait_for()
        order = [int(f) for f in rows.evaluate_all("rs => rs.map(r => r.dataset.filter)")]
        assert order == expected_order(values, declared[name], True), name
    assert view.get_attribute("data-sort") == "cf/no_red"
    # The sorted column's cells read as declared: a percent column as a signed percentage.
    cells = frame.locator("[data-testid=impact-row] td.cvz-sorted").all_text_contents()
    assert all(c.endswith("%") and c[0] in "+-0" for c in cells), cells


def test_the_csv_holds_the_numbers_logs_to_csv_writes(tab, frame, logdir):
    open_impact(frame, RUN_IMPACT, "0")
    with tab.page.expect_download() as download:
        frame.locator("[data-testid=impact-view] [data-testid=download-csv]").click()
    assert download.value.suggested_filename == f"convviz_{RUN_IMPACT}_0_step{LAST}_impact.csv"
    got = list(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
    want = list(csv.reader(io.StringIO(load(logdir).to_csv(RUN_IMPACT, "0", LAST))))
    assert got[0] == want[0]  # filter, every column by name, intervals as <name>_lo, <name>_hi
    assert {"hoyer", "gain.up", "d_accuracy_lo", "d_accuracy_hi", "topk_flag"} <= set(got[0])
    assert got[0].index("d_accuracy_lo") == got[0].index("d_accuracy") + 1
    assert len(got) == len(want) == 1 + 8
    for g, w in zip(got[1:], want[1:]):
        for name, a, b in zip(got[0], g, w):
            assert (a == "") == (b == ""), (name, a, b)  # missing is empty in both
            if a:  # raw numbers, equal as the float32 the record stores
                assert np.float32(float(a)) == np.float32(float(b)), (name, a, b)
                assert "%" not in a and "#" not in a and "—" not in a
    flags = [r[got[0].index("topk_flag")] for r in got[1:]]
    assert set(flags) <= {"0", "1"} and "1" in flags


def test_the_filter_detail_charts_a_user_metrics_history(frame, tensorboard_url):
    rows = open_impact(frame, RUN_IMPACT, "0")
    rows.first.click()
    f = rows.first.get_attribute("data-filter")
    panel = frame.locator(f'[data-testid=detail-panel][data-filter="{f}"]')
    panel.locator("[data-testid=history-chart]").wait_for()
    select = panel.locator("[data-testid=history-column]")
    groups = select.locator("optgroup").evaluate_all("gs => gs.map(g => g.label)")
    assert groups[0] == "Impact" and groups[-1] == "User"
    assert select.locator("optgroup[label=User] option").all_text_contents() == ["Hoyer sparsity", "Gain ×2", "Gain ×0.5"]
    select.select_option("hoyer")
    chart = panel.locator("[data-testid=history-chart][data-column=hoyer]")
    chart.wait_for()
    history = answer(tensorboard_url, f"filter?run={RUN_IMPACT}&layer=0&step={LAST}&filter={f}")["column_history"]["hoyer"]
    assert history["steps"] == list(range(EPOCHS))
    assert json.loads(chart.get_attribute("data-values")) == history["values"]
    assert chart.locator("circle.cvz-chart-dot").count() == EPOCHS
    assert chart.locator(".cvz-axis-title[data-axis=x]").text_content() == "step"
    assert chart.locator(".cvz-axis-title[data-axis=y]").text_content() == "Hoyer sparsity"
    assert panel.locator("[data-testid=history-description]").text_content() == "0 = every position active, 1 = one position"
    # A column with an interval shades it: Δaccuracy's 95% interval at each step.
    select.select_option("d_accuracy")
    band = panel.locator("[data-testid=history-chart][data-column=d_accuracy] [data-testid=chart-band]")
    band.wait_for()
    assert band.get_attribute("d").count("Z") >= 1
    # The choice holds for the next filter opened.
    rows.nth(1).click()
    frame.locator(f'[data-testid=detail-panel][data-filter="{rows.nth(1).get_attribute("data-filter")}"] '
                  "[data-testid=history-chart][data-column=d_accuracy]").wait_for()


def test_similarity_and_filter_map_export_png_and_csv(tab, frame):
    choose(frame, RUNS_2D[0], "3", LAST)
    frame.locator("[data-testid=mode-picker] button[data-value=similarity]").click()
    figure = frame.locator("[data-testid=cka-layers]")
    figure.locator("[data-testid=cka-layers-cell]").first.wait_for()
    with tab.page.expect_download() as download:
        figure.locator("[data-testid=download-csv]").click()
    assert download.value.suggested_filename == f"convviz_baseline_3_step{LAST}_cka_layers.csv"
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
    labels = figure.locator("[data-testid=cka-layers-row-label]").all_text_contents()
    assert rows[0][1:] == labels and [r[0] for r in rows[1:]] == labels
    cells = [float(v) for v in figure.locator("[data-testid=cka-layers-cell]").evaluate_all("cs => cs.map(c => c.dataset.value)")]
    assert [float(v) for r in rows[1:] for v in r[1:]] == cells
    with tab.page.expect_download() as download:
        frame.locator("[data-testid=cka-epochs] [data-testid=download-png]").click()
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    frame.locator("[data-testid=mode-picker] button[data-value=embedding]").click()
    plot = frame.locator(f'[data-testid=embedding-plot][data-step="{LAST}"]')
    plot.locator("[data-testid=embedding-point]").first.wait_for()
    view = frame.locator("[data-testid=embedding-view]")
    frame.locator("[data-testid=embedding-color]").select_option("l2")
    frame.locator("[data-testid=embedding-view] .cvz-legend-note", has_text="L2 norm").wait_for()
    with tab.page.expect_download() as download:
        view.locator("[data-testid=download-csv]").click()
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
    assert rows[0] == ["filter", "x", "y", "l2"]
    assert [int(r[0]) for r in rows[1:]] == list(range(16))
    assert all(r[1] and r[2] and float(r[3]) > 0 for r in rows[1:])
    with tab.page.expect_download() as download:
        view.locator("[data-testid=download-png]").click()
    assert download.value.suggested_filename.endswith("_filter-map.png")
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- records that could not be read -------------------------------------------------------------

BAD_RUN = "broken"


def add_unreadable_records(run_dir: Path) -> None:
    """A second event file in the run holding convviz records no reader can use, each under a tag
    of its own (TensorBoard keeps a tag's first metadata): `[]` as the plugin content, and a
    record of a kind no version knows."""
    events = []
    for layer, tag, content in (("0", "listed", "[]"), ("3", "sparkles", json.dumps({"version": fmt.FORMAT_VERSION, "kind": "sparkles"}))):
        summary = record_summary(layer, tag, b"")
        summary.value[0].metadata.plugin_data.content = content.encode()
        events.append(tfrecord(event_pb2.Event(wall_time=time.time(), step=1, summary=summary).SerializeToString()))
    (run_dir / "events.out.tfevents.9999999999.crafted").write_bytes(b"".join(events))


@pytest.fixture(scope="module")
def broken_tab(browser, tmp_path_factory):
    """The tab over a logdir of one good run and one whose extra event file is unreadable."""
    root = tmp_path_factory.mktemp("broken_logs")
    x, y = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2] * 2)
    with one_thread():
        for run in ("good", BAD_RUN):
            torch.manual_seed(0)
            train_and_log(root / run, two_conv_net((4, 5), classes=3), (x, y), lambda: [(x, y)], [0, 1], lr=0.3,
                          metrics=[HOYER], perturbations=False)
    add_unreadable_records(root / BAD_RUN)
    with tensorboard(root) as url:
        if not wait_for(lambda: served_runs(url) >= 2, timeout=60):
            raise RuntimeError("tensorboard did not serve both runs within 60 s")
        # The crafted event file is read after the good ones: its problems are listed once it was.
        if not wait_for(lambda: len(answer(url, "index")["problems"]) >= 2, timeout=60):
            raise RuntimeError(f"/index did not list the crafted records' problems: {answer(url, 'index')['problems']}")
        with opened_tab(browser, url) as (frame, errors):
            yield frame, url, errors


def test_unreadable_records_are_listed_in_a_notice_and_the_rest_is_shown(broken_tab):
    frame, url, errors = broken_tab
    problems = answer(url, "index")["problems"]
    assert len(problems) >= 2 and {p["run"] for p in problems} == {BAD_RUN}
    notice = frame.locator("[data-testid=problems]")
    notice.wait_for()
    summary = notice.locator("summary").text_content()
    assert summary.startswith(f"{len(problems)} records could not be read and are left out: run {BAD_RUN} · ")
    assert problems[0]["reason"] in summary
    notice.locator("summary").click()
    items = notice.locator("[data-testid=problem]")
    assert items.count() == len(problems)
    for item, p in zip(items.all_text_contents(), problems):
        step = "every step" if p["step"] is None else f"step {p['step']}"
        assert item == f"run {p['run']} · {p['tag']} · {step}: {p['reason']}"
    # Both runs draw: the bad run's readable records, the good run's all.
    for run in ("good", BAD_RUN):
        frame.locator("[data-testid=run-picker]").select_option(run)
        grid_shows(frame, run, "0")
        frame.locator("[data-testid=mode-picker] button[data-value=impact]").click()
        frame.locator("[data-testid=impact-view][data-loading=false] [data-testid=impact-sort][data-metric=hoyer]").wait_for()
        frame.locator("[data-testid=mode-picker] button[data-value=filters]").click()
    assert errors == []


def test_a_group_can_be_left_out_of_the_table_but_not_out_of_its_csv(tab, frame, tensorboard_url):
    open_impact(frame, RUN_IMPACT, "0")
    table = answer(tensorboard_url, f"table?run={RUN_IMPACT}&layer=0&step={LAST}")
    impact = [c["name"] for c in table["columns"] if c["group"] == "impact"]
    toggle = frame.locator("[data-testid=impact-groups] input[data-group=impact]")
    assert toggle.is_checked()
    toggle.uncheck()
    frame.locator("[data-testid=impact-group][data-group=impact]").wait_for(state="detached")
    shown = frame.locator("[data-testid=impact-sort]").evaluate_all("bs => bs.map(b => b.dataset.metric)")
    assert shown and not set(impact) & set(shown) and "hoyer" in shown
    # Sorted by the first visible column with a better end, once the sorted one is left out.
    assert frame.locator("[data-testid=impact-view]").get_attribute("data-sort") in shown
    with tab.page.expect_download() as download:
        frame.locator("[data-testid=impact-view] [data-testid=download-csv]").click()
    header = next(csv.reader(io.StringIO(Path(download.value.path()).read_text("utf-8"))))
    assert set(impact) <= set(header)
    toggle.check()
    frame.locator("[data-testid=impact-group][data-group=impact]").wait_for()
