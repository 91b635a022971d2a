"""The CONVVIZ tab's layout at a 1400×900 window, and its downloads: a table as CSV, a grid and a
chart as PNG, each holding what the screen shows. Headless Chromium, real TensorBoard."""
from __future__ import annotations

import base64
import csv
import io
import json
import struct
from pathlib import Path

from conftest import FILTERS_VIEW, LAST, RUN_1D, RUN_IMPACT, RUNS_2D, WIDE_FILTERS, choose


def box(locator) -> dict:
    """The element's box in its frame's viewport, with the viewport's size."""
    return locator.evaluate(
        "e => { const r = e.getBoundingClientRect();"
        " return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width, vw: innerWidth, vh: innerHeight}; }"
    )


def test_detail_reads_beside_the_grid_and_table_at_1400_by_900(browser, tensorboard_url):
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    page.set_default_timeout(15_000)
    try:
        page.goto(f"{tensorboard_url}/{FILTERS_VIEW}")
        frame = page.frame_locator('iframe[src*="name=convviz"]')
        grid = choose(frame, RUNS_2D[0], "0", LAST)
        grid.click(position={"x": 6, "y": 6})
        panel = frame.locator('[data-testid=detail-panel][data-filter="0"]')
        panel.locator("[data-testid=detail-slices] canvas").first.wait_for()
        # Beside the grid at a usable width, its facts and first section in view without scrolling.
        p, g = box(panel), box(grid)
        assert p["width"] >= 480 and p["left"] >= g["right"]
        for part in (panel.locator(".cvz-facts").first, panel.locator("[data-testid=detail-slices] canvas").last):
            b = box(part)
            assert 0 <= b["top"] and b["bottom"] <= b["vh"], (part, b)

        frame.locator("[data-testid=run-picker]").select_option(RUN_IMPACT)
        frame.locator("[data-testid=mode-picker] button[data-value=impact]").click()
        frame.locator(f'[data-testid=impact-view][data-step="{LAST}"][data-loading=false]').wait_for()
        frame.locator("[data-testid=impact-row]").first.click()
        facts = frame.locator("[data-testid=detail-panel] [data-testid=detail-impact] .cvz-facts")
        facts.wait_for()
        b = box(facts)
        assert 0 <= b["top"] and b["bottom"] <= b["vh"]
        # The table scrolls sideways under its Flags column, which stays in view.
        wrap = frame.locator(".cvz-impact-wrap")
        flags = frame.locator("[data-testid=impact-table] th.cvz-flags")
        for scroll in (0, 10_000):
            wrap.evaluate("(w, x) => (w.scrollLeft = x)", scroll)
            w, f = box(wrap), box(flags)
            assert w["left"] <= f["left"] and f["right"] <= w["right"], (scroll, w, f)
        assert wrap.evaluate("w => w.scrollLeft") > 0  # the detail left the table too narrow: it did scroll
    finally:
        page.context.close()


def saved(page, button) -> bytes:
    with page.expect_download() as download:
        button.click()
    return Path(download.value.path()).read_bytes(), download.value.suggested_filename


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_impact_table_downloads_the_numbers_of_its_cells(tab, frame):
    choose(frame, RUN_IMPACT, "0", LAST)
    frame.locator("[data-testid=mode-picker] button[data-value=impact]").click()
    view = frame.locator(f'[data-testid=impact-view][data-step="{LAST}"][data-loading=false]')
    view.wait_for()
    data, name = saved(tab.page, view.locator("[data-testid=download-csv]"))
    assert name == f"convviz_{RUN_IMPACT}_0_step{LAST}_impact.csv"
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    # A column per declared number, by name, in the table's order, an interval's bounds after it.
    shown = frame.locator("[data-testid=impact-sort]").evaluate_all("bs => bs.map(b => b.dataset.metric)")
    assert [h for h in rows[0][1:] if not h.endswith(("_lo", "_hi"))] == shown
    assert rows[0][0] == "filter" and "stability" in rows[0] and "cf/no_red/flag" in rows[0]
    assert len(rows) == 1 + 8
    # The sorted column's raw numbers, filter by filter, are the rows' values.
    by_filter = {r[0]: r for r in rows[1:]}
    column = rows[0].index(view.get_attribute("data-sort"))
    for row in frame.locator("[data-testid=impact-row]").all():
        assert float(by_filter[row.get_attribute("data-filter")][column]) == float(row.get_attribute("data-value"))
    assert any(r[rows[0].index("cf/no_red/flag")] == "1" for r in rows[1:])  # the flags came along, as 0/1


def test_grid_and_chart_download_as_png_of_what_is_drawn(tab, frame):
    grid = choose(frame, RUNS_2D[0], "3", LAST)
    button = frame.locator("[data-testid=layer-view] [data-testid=download-png]")
    data, name = saved(tab.page, button)
    assert name == f"convviz_baseline_3_step{LAST}_weights_grid.png"
    # A figure: a title above the grid's pixels and the colour bar below them, no UI buttons.
    width, height = png_size(data)
    canvas_w, canvas_h = grid.evaluate("c => [c.width, c.height]")
    at = json.loads(button.get_attribute("data-figure"))
    assert at["y"] >= 12 and width >= canvas_w + at["x"] and height > at["y"] + canvas_h + 12
    # Decoded by the browser: every opaque pixel of the grid's canvas is in the PNG as drawn, where
    # data-figure says; above it the title's dark text, below it the colour bar's colours.
    same, opaque, colours, title_dark, below = grid.evaluate(
        """async (c, [b64, x0, y0]) => {
          const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
          const bmp = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
          const out = new OffscreenCanvas(bmp.width, bmp.height).getContext("2d");
          out.drawImage(bmp, 0, 0);
          const png = out.getImageData(0, 0, bmp.width, bmp.height).data;
          const screen = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
          let same = 0, opaque = 0;
          const colours = new Set();
          for (let r = 0; r < c.height; r++) for (let q = 0; q < c.width; q++) {
            const i = 4 * (r * c.width + q), j = 4 * ((r + y0) * bmp.width + q + x0);
            colours.add(png[j] * 65536 + png[j + 1] * 256 + png[j + 2]);
            if (screen[i + 3] !== 255) continue;
            opaque++;
            if (png[j] === screen[i] && png[j + 1] === screen[i + 1] && png[j + 2] === screen[i + 2]) same++;
          }
          let titleDark = 0;
          for (let j = 0; j < 4 * bmp.width * y0; j += 4) if (png[j] + png[j + 1] + png[j + 2] < 384) titleDark++;
          const below = new Set();
          for (let j = 4 * bmp.width * (y0 + c.height); j < png.length; j += 4) below.add(png[j] * 65536 + png[j + 1] * 256 + png[j + 2]);
          return [same, opaque, colours.size, titleDark, below.size];
        }""",
        [base64.b64encode(data).decode(), at["x"], at["y"]],
    )
    assert opaque > 16 * 9 and same == opaque
    assert colours > 50  # sixteen filters of nine weights each, not a blank image
    assert title_dark > 50  # the title's text
    assert below > 30  # the colour bar's gradient and its numbers

    grid.click(position={"x": 6, "y": 6})
    chart = frame.locator("[data-testid=detail-panel] [data-testid=history-chart]").first
    chart.wait_for()
    data, name = saved(tab.page, chart.locator("[data-testid=download-png]"))
    f = frame.locator("[data-testid=detail-panel]").get_attribute("data-filter")
    assert name.endswith(f"_filter{f}_L2-norm-of-filter-{f}.png")
    width, height = png_size(data)
    expected = chart.evaluate("f => { const r = f.getBoundingClientRect(); return [Math.ceil(r.width), Math.ceil(r.height)]; }")
    dpr = chart.evaluate("() => devicePixelRatio")
    assert (width, height) == (round(expected[0] * dpr), round(expected[1] * dpr))
    # The line, in the chart's own colour, made it into the picture.
    line, dark = chart.evaluate(
        """async (f, b64) => {
          const rgb = getComputedStyle(f.querySelector("path.cvz-chart-line")).stroke.match(/\\d+/g).map(Number);
          const bytes = Uint8Array.from(atob(b64), (ch) => ch.charCodeAt(0));
          const bmp = await createImageBitmap(new Blob([bytes], { type: "image/png" }));
          const out = new OffscreenCanvas(bmp.width, bmp.height).getContext("2d");
          out.drawImage(bmp, 0, 0);
          const px = out.getImageData(0, 0, bmp.width, bmp.height).data;
          let line = 0, dark = 0;
          for (let i = 0; i < px.length; i += 4) {
            if (Math.abs(px[i] - rgb[0]) + Math.abs(px[i + 1] - rgb[1]) + Math.abs(px[i + 2] - rgb[2]) < 30) line++;
            if (px[i] + px[i + 1] + px[i + 2] < 384) dark++;
          }
          return [line, dark];
        }""",
        base64.b64encode(data).decode(),
    )
    assert line > 50  # the plotted line
    assert dark > 100  # and text: title, ticks, axis titles


def test_a_wide_layers_drift_table_draws_its_first_rows_and_exports_all(tab, frame):
    choose(frame, RUN_1D, "2", LAST)
    frame.locator("[data-testid=mode-picker] button[data-value=epochs]").click()
    rows = frame.locator("[data-testid=compare-row]")
    rows.nth(255).wait_for()
    more = frame.locator("[data-testid=compare-show-all]")
    assert rows.count() == 256 and more.text_content().startswith(f"Showing the first 256 of {WIDE_FILTERS} filters")
    data, _ = saved(tab.page, frame.locator("[data-testid=compare-view] [data-testid=download-csv]"))
    table = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert len(table) == 1 + WIDE_FILTERS and table[0][0] == "Rank"
    assert [int(r[0]) for r in table[1:]] == list(range(1, WIDE_FILTERS + 1))
    first = rows.first.get_attribute("data-filter")
    rows.first.click()
    frame.locator(f'[data-testid=compare-row][data-filter="{first}"][aria-selected=true]').wait_for()
    assert rows.count() == 256
    more.click()
    rows.nth(WIDE_FILTERS - 1).wait_for()
    assert rows.count() == WIDE_FILTERS and more.is_hidden()
