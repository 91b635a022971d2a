"""The Impact table scrolled sideways: a header clicked far to the right is brought into view beside
the pinned Filter and Flags columns, and its group's name stays readable above it, however far
the table was scrolled before (headless Chromium, real TensorBoard)."""
from __future__ import annotations

import time

from conftest import LAST, RUN_IMPACT, choose


def box(locator) -> dict:
    return locator.evaluate("e => { const r = e.getBoundingClientRect(); return {left: r.left, right: r.right}; }")


def test_a_sorted_column_and_its_group_name_show_beside_the_pinned_columns(frame):
    choose(frame, RUN_IMPACT, "0", LAST)
    frame.locator("[data-testid=mode-picker] button[data-value=impact]").click()
    frame.locator(f'[data-testid=impact-view][data-step="{LAST}"][data-loading=false]').wait_for()
    frame.locator("[data-testid=impact-row]").first.click()  # the detail opens: the table narrows
    frame.locator("[data-testid=detail-panel][data-loading=false]").wait_for()
    wrap = frame.locator(".cvz-impact-wrap")
    flags = frame.locator("[data-testid=impact-table] th.cvz-flags")
    # Far right, then back left, then right again from a scrolled table.
    for name in ("hoyer", "d_loss", "cf/no_red", "gain.up", "hoyer"):
        frame.locator(f'[data-testid=impact-sort][data-metric="{name}"]').click()
        frame.locator(f'[data-testid=impact-view][data-sort="{name}"]').wait_for()
        start = box(flags)["right"]
        end = wrap.evaluate("w => w.getBoundingClientRect().left + w.clientLeft + w.clientWidth")
        th = frame.locator(f'[data-testid=impact-sort][data-metric="{name}"]').locator("xpath=..")
        b = box(th)
        assert start - 1 <= b["left"] and b["right"] <= end + 1, (name, start, end, b)
        group = th.evaluate(
            "th => { const row = th.parentElement.previousElementSibling; let x = th.getBoundingClientRect().left;"
            " for (const g of row.querySelectorAll('th.cvz-group')) { const r = g.getBoundingClientRect();"
            " if (r.left <= x + 1 && x < r.right) return g.dataset.group; } return null; }"
        )
        label = box(frame.locator(f'th.cvz-group[data-group="{group}"] > span'))
        assert start <= label["left"] and label["right"] <= end + 1, (name, group, start, end, label)


def test_opening_a_filter_detail_keeps_the_sorted_column_in_view(frame):
    """Sorted by a column far to the right, then a row opened: the detail takes half the width and
    the table narrows, and the sorted column is scrolled back beside the pinned ones."""
    choose(frame, RUN_IMPACT, "0", LAST)
    close = frame.locator("[data-testid=detail-panel] .cvz-icon-button")
    frame.locator("[data-testid=mode-picker] button[data-value=impact]").click()
    frame.locator(f'[data-testid=impact-view][data-step="{LAST}"][data-loading=false]').wait_for()
    if close.is_visible():
        close.click()
    for name in ("cf/no_red", "hoyer"):
        frame.locator(f'[data-testid=impact-sort][data-metric="{name}"]').click()
        frame.locator(f'[data-testid=impact-view][data-sort="{name}"]').wait_for()
        frame.locator("[data-testid=impact-row]").nth(1).click()
        frame.locator("[data-testid=detail-panel][data-loading=false]").wait_for()
        wrap = frame.locator(".cvz-impact-wrap")
        th = frame.locator(f'[data-testid=impact-sort][data-metric="{name}"]').locator("xpath=..")

        def where() -> tuple[float, float, dict]:
            start = box(frame.locator("[data-testid=impact-table] th.cvz-flags"))["right"]
            end = wrap.evaluate("w => w.getBoundingClientRect().left + w.clientLeft + w.clientWidth")
            return start, end, box(th)

        # The table narrows after the detail lays out; give its resize a moment to scroll.
        deadline = time.monotonic() + 3
        start, end, b = where()
        while not (start - 1 <= b["left"] and b["right"] <= end + 1) and time.monotonic() < deadline:
            time.sleep(0.1)
            start, end, b = where()
        assert start - 1 <= b["left"] and b["right"] <= end + 1, (name, start, end, b)
        frame.locator("[data-testid=detail-panel] .cvz-icon-button").click()
