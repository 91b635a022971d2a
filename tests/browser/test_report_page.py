"""The report opens in a real browser with no console error and no request beyond its own file."""
from __future__ import annotations

from pathlib import Path

from planted_findings import NEEDED, write_planted_run
from tb_convviz.cli.report import write_report


def test_the_report_opens_offline_without_errors_or_requests(browser, tmp_path: Path):
    write_planted_run(tmp_path / "logs" / "planted")
    out = write_report(str(tmp_path / "logs"), "planted", str(tmp_path / "report.html"))
    context = browser.new_context(viewport={"width": 1400, "height": 900}, offline=True)
    page = context.new_page()
    problems: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    try:
        page.goto(out.resolve().as_uri())
        page.wait_for_load_state("load")
        images = page.locator("img")
        assert images.count() >= 4
        # every picture decoded: an image that failed to load has no natural width
        assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        assert page.locator("h3.finding[data-kind=needed]", has_text=f"conv filter {NEEDED}").count() == 1
        assert page.locator("h3.finding[data-kind=shortcut]").count() >= 1
    finally:
        context.close()
    assert problems == []
    assert all(url.startswith(("file://", "data:")) for url in requests), requests
