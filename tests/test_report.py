"""`tb-convviz report`: one self-contained HTML file (no src/href to anywhere, every picture inline)
naming the planted findings with their evidence; `--format md` writes Markdown with its pictures
beside it; a run the logs do not hold is one line and exit status 2."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from planted_findings import MARKER, NEEDED, NEEDED_CLASS, write_planted_run
from tb_convviz.cli.command import main

REFERENCE = re.compile(r"""\b(?:src|href|action|poster|data)\s*=\s*["']?([^"'\s>]*)""", re.I)


@pytest.fixture(scope="module")
def logdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    write_planted_run(root / "planted")
    return root


def test_the_html_report_is_self_contained_and_names_the_planted_findings(logdir: Path, tmp_path: Path, capsys):
    out = tmp_path / "report.html"
    assert main(["report", str(logdir), "--run", "planted", "-o", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    references = REFERENCE.findall(text)
    assert references and all(r.startswith("data:image/png;base64,") for r in references), references
    assert "url(" not in text and "@import" not in text and "<script" not in text and "<link" not in text
    assert text.count("<img") == text.count('src="data:image/png;base64,') >= 4
    assert f"conv filter {MARKER}: &#x27;add marker&#x27; changes its activation" in text and "away from class 3" in text
    assert f"conv filter {NEEDED}: zeroing it changes probe accuracy by -21.7%" in text
    assert f"class {NEEDED_CLASS} recall -100.0%" in text and "<svg" in text  # its per-class Δrecall bars
    assert "What this probe can and cannot detect" in text and "probe: 46 images" in text
    assert "counterfactuals: add marker, remove marker" in text
    assert "Not looked for — texture" in text


def test_the_markdown_report_has_its_pictures_beside_it(logdir: Path, tmp_path: Path):
    out = tmp_path / "report.md"
    assert main(["report", str(logdir), "--run", "planted", "-o", str(out), "--format", "md"]) == 0
    text = out.read_text(encoding="utf-8")
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert linked and all((tmp_path / link).is_file() for link in linked)
    assert any(link.endswith(".png") for link in linked)
    assert (tmp_path / linked[0]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"### conv filter {NEEDED}: zeroing it" in text


def test_a_run_the_logs_do_not_hold_is_one_line_and_status_2(logdir: Path, tmp_path: Path, capsys):
    assert main(["report", str(logdir), "--run", "nope", "-o", str(tmp_path / "r.html")]) == 2
    assert "no convviz data for run 'nope'" in capsys.readouterr().err
