"""`tb-convviz report`: a run's findings as one file to share — self-contained HTML (every picture
inline, no network request, readable offline and in a CI artifact viewer) or Markdown with its
pictures beside it.

The findings and their rules are `Logs.findings_report`'s (declared in analysis/findings.py); this
module only draws them: the filters' kernels, their top activating probe examples with the
filter's map where one was kept, per-class Δrecall bars with intervals, the CKA-to-final curve.
"""
from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from tb_convviz.analysis.findings import CURVES, SETTLED_CKA
from tb_convviz.analysis.significance import detectable_effect
from tb_convviz.cli.projector import png_bytes, tile_images
from tb_convviz.read.reader import Logs, NotFound, load
from tb_convviz.schema import format as fmt
from tb_convviz.schema import records

MAX_PICTURED = 30  # findings drawn with pictures; the rest are listed with their evidence
TOP_EXAMPLES = 5
ZOOM_KERNEL = 10
EXAMPLE_SIDE = 64


@dataclass
class Picture:
    """One picture of a finding: a PNG (`png`) or an SVG chart (`svg`), with a caption."""

    caption: str
    png: Optional[bytes] = None
    svg: Optional[str] = None


@dataclass
class Drawn:
    finding: dict
    pictures: list[Picture] = field(default_factory=list)


def _zoom(image: np.ndarray, side: int) -> np.ndarray:
    """Nearest-neighbour enlargement of (h, w, 3) to about `side` pixels on its longer side."""
    k = max(1, side // max(image.shape[:2]))
    return image.repeat(k, axis=0).repeat(k, axis=1)


def _image_rgb(image: np.ndarray) -> np.ndarray:
    """A probe image (C, H, W) or (C, L) → (H, W, 3) uint8: RGB when it has 3 channels, else grey."""
    a = np.asarray(image, np.float64)
    if a.ndim == 2:
        a = a[:, None, :]
    a = a if a.shape[0] == 3 else a.mean(0, keepdims=True).repeat(3, 0)
    lo, hi = a.min(), a.max()
    return np.round((a - lo) / (hi - lo if hi > lo else 1) * 255).astype(np.uint8).transpose(1, 2, 0)


def _heat(activation: np.ndarray) -> np.ndarray:
    """A map (H, W) → (H, W, 3): black at its minimum, orange-white at its maximum."""
    a = np.asarray(activation, np.float64)
    a = (a - a.min()) / (a.max() - a.min() if a.max() > a.min() else 1)
    return np.round(np.stack([a, a ** 1.5 * 0.8, a ** 3 * 0.6], -1) * 255).astype(np.uint8)


def _bars(classes: list[dict]) -> str:
    """SVG: per class Δrecall as a bar from 0 with its interval as a whisker, −100%…+100%."""
    width, row, left = 360, 22, 70
    height = row * len(classes) + 28
    x = lambda v: left + (v + 1) / 2 * (width - left - 30)  # noqa: E731
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">',
             f'<line x1="{x(0):.1f}" y1="4" x2="{x(0):.1f}" y2="{height - 20}" stroke="#888"/>']
    for i, c in enumerate(classes):
        y = 6 + i * row
        d = c["d_recall"]
        lo, hi = c["d_recall_ci"] if c.get("d_recall_ci") else (d, d)
        a, b = sorted((x(0), x(d)))
        parts.append(f'<text x="4" y="{y + 12}">class {html.escape(str(c["class"]))}</text>')
        parts.append(f'<rect x="{a:.1f}" y="{y + 2}" width="{max(b - a, 1):.1f}" height="12" fill="#e65100"/>')
        parts.append(f'<line x1="{x(lo):.1f}" y1="{y + 8}" x2="{x(hi):.1f}" y2="{y + 8}" stroke="#000"/>')
    for v in (-1, -0.5, 0, 0.5, 1):
        parts.append(f'<text x="{x(v):.1f}" y="{height - 6}" text-anchor="middle">{v:+.0%}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _curve(steps: list[int], values: list[Optional[float]], threshold: float) -> str:
    """SVG: CKA to the final step over the steps, with the settling threshold dashed."""
    width, height, pad = 360, 160, 36
    pts = [(s, v) for s, v in zip(steps, values) if v is not None and math.isfinite(v)]
    lo = min([threshold - 0.01] + [v for _, v in pts])
    span = max(steps[-1] - steps[0], 1)
    x = lambda s: pad + (s - steps[0]) / span * (width - pad - 10)  # noqa: E731
    y = lambda v: 10 + (1 - (v - lo) / (1 - lo if lo < 1 else 1)) * (height - pad - 10)  # noqa: E731
    line = " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in pts)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">'
            f'<polyline points="{line}" fill="none" stroke="#1565c0" stroke-width="2"/>'
            f'<line x1="{pad}" y1="{y(threshold):.1f}" x2="{width - 10}" y2="{y(threshold):.1f}" stroke="#888" stroke-dasharray="4 3"/>'
            f'<text x="2" y="{y(threshold) + 4:.1f}">{threshold}</text><text x="2" y="{y(lo) + 4:.1f}">{lo:.2f}</text>'
            f'<text x="{pad}" y="{height - 6}">step {steps[0]}</text>'
            f'<text x="{width - 10}" y="{height - 6}" text-anchor="end">step {steps[-1]} (final)</text></svg>')


def _pictures(logs: Logs, run: str, step: int, f: dict, probe: Optional[np.ndarray], kinds: dict[str, list[str]]) -> list[Picture]:
    out: list[Picture] = []
    layer, filters = f["layer"], f["filters"][:2]
    if layer and filters:
        try:
            at = logs.latest_at_or_before(run, layer, fmt.KIND_FILTERS, step)
            tiles = logs.bundle(run, layer, fmt.KIND_FILTERS, at).array(records.TILES, np.asarray(filters))
            pics = tile_images(np.asarray(tiles, np.float64))
            for filt, pic in zip(filters, pics):
                out.append(Picture(f"{layer} filter {filt}: kernel at step {at} (red +, blue −)", png=png_bytes(_zoom(pic, 80))))
        except (NotFound, KeyError, ValueError):
            pass
        if probe is not None and fmt.KIND_IMPACT in kinds.get(layer, ()):
            out.extend(_examples(logs, run, layer, step, filters[0], probe))
    if f["kind"] in ("needed", "harmful") and f["evidence"].get("classes"):
        out.append(Picture("Δrecall per class when the filter is zeroed, with its interval", svg=_bars(f["evidence"]["classes"])))
    if f["kind"] == "settled":
        out.append(Picture(f"{layer}: debiased CKA with the final step", svg=_curve(f["evidence"]["steps"], f["evidence"]["curve"], SETTLED_CKA)))
    return out


def _examples(logs: Logs, run: str, layer: str, step: int, filt: int, probe: np.ndarray) -> list[Picture]:
    """The filter's top activating probe examples, each with the filter's map beside it where kept."""
    try:
        at = logs.latest_at_or_before(run, layer, fmt.KIND_IMPACT, step)
        top = logs.top_examples(run, layer, at)
    except NotFound:
        return []
    index, labels = top["index"][filt][:TOP_EXAMPLES], top.get("label")
    maps = None
    try:
        bundle = logs.bundle(run, layer, fmt.KIND_MAPS, logs.latest_at_or_before(run, layer, fmt.KIND_MAPS, step))
        maps = (bundle.meta.get("images", []), bundle.array(records.MAPS, None))
    except (NotFound, KeyError):
        pass
    tiles = []
    for i in index:
        pic = _zoom(_image_rgb(probe[int(i)]), EXAMPLE_SIDE)
        if maps is not None and int(i) in maps[0] and maps[1].ndim == 4:
            heat = _heat(maps[1][maps[0].index(int(i)), filt])
            heat = _zoom(heat, EXAMPLE_SIDE)[: pic.shape[0], : pic.shape[1]]
            pad = np.full((pic.shape[0], pic.shape[1], 3), 255, np.uint8)
            pad[: heat.shape[0], : heat.shape[1]] = heat
            pic = np.concatenate([pic, pad], axis=1)
        tiles.append(pic)
    if not tiles:
        return []
    h = max(t.shape[0] for t in tiles)
    row = np.concatenate([np.pad(t, ((0, h - t.shape[0]), (0, 6), (0, 0)), constant_values=255) for t in tiles], axis=1)
    names = ", ".join(f"#{int(i)} (label {int(v)})" for i, v in zip(index, labels[filt])) if labels is not None else ""
    return [Picture(f"top activating probe examples of {layer} filter {filt}, the filter's map beside those whose maps "
                    f"were kept: {names}", png=png_bytes(row))]


def _options(logs: Logs, run: str) -> list[str]:
    """What the run logged, in the ConvViz options that turned it on."""
    by_layer = logs.layer_kinds(run)
    kinds = {k for found in by_layer.values() for k in found}
    edits: set[str] = set()
    for layer in logs.layers(run):
        if fmt.KIND_PERTURBATION in by_layer.get(layer, ()):
            names = logs.bundle(run, layer, fmt.KIND_PERTURBATION).names()
            edits |= {n[len(fmt.COUNTERFACTUAL_PREFIX):].split("/")[0] for n in names if n.startswith(fmt.COUNTERFACTUAL_PREFIX)}
            break
    out = [f"impact: {'on' if fmt.KIND_IMPACT in kinds else 'off'}",
           f"perturbations: {'on' if fmt.KIND_PERTURBATION in kinds else 'off'}",
           f"counterfactuals: {', '.join(sorted(edits)) or 'none'}",
           f"similarity (Gram, profiles): {'on' if fmt.KIND_PROFILE in kinds else 'off'}",
           f"user metrics: {'yes' if fmt.KIND_METRICS in kinds else 'none'}"]
    return out


def _detectable(report: dict) -> list[str]:
    """What the probe can and cannot detect, in sentences."""
    p, alpha = report["probe"], report["alpha"]
    lines = []
    if not p["labelled"]:
        return ["The probe has no labels: nothing about accuracy or classes can be measured."]
    d = detectable_effect(len(np.repeat(p["classes"], p["support"])), alpha)
    lines.append(f"A single filter's Δaccuracy is detectable (exact McNemar, α = {alpha:g}, 80% power) from "
                 f"{d:.0%} on." if math.isfinite(d) else "No single filter's Δaccuracy is detectable on this probe.")
    per = detectable_effect(np.asarray(p["support"]), alpha)
    small = [str(c) for c, v in zip(p["classes"], np.atleast_1d(per)) if not math.isfinite(v)]
    if small:
        lines.append(f"Classes with fewer than 6 examples, where no Δrecall can be significant: {', '.join(small)}.")
    finite = [v for v in np.atleast_1d(per) if math.isfinite(v)]
    if finite:
        lines.append(f"Per class, the smallest detectable Δrecall ranges from {min(finite):.0%} to {max(finite):.0%}.")
    lines += [f"Not looked for — {u['kind']}: {u['reason']} (enable: {u['enable']})." for u in report["unavailable"]]
    return lines


def build(logdir: str, run: str, step: Optional[int] = None) -> tuple[dict, list[Drawn], list[str], list[str]]:
    """The findings report of `run`, each finding with its pictures; the options; the probe's limits."""
    logs = load(logdir)
    if run not in logs.runs():
        raise NotFound(f"no convviz data for run {run!r} in {logdir}")
    report = logs.findings_report(run, step)
    try:
        probe = logs.probe(run)[0]
    except NotFound:
        probe = None
    kinds = logs.layer_kinds(run)
    drawn = [Drawn(f, _pictures(logs, run, report["step"], f, probe, kinds) if i < MAX_PICTURED else [])
             for i, f in enumerate(report["findings"])]
    return report, drawn, _options(logs, run), _detectable(report)


def _show(v: Any) -> str:
    """A value of the evidence in a table cell: numbers to 4 significant digits, None as —."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and all(isinstance(x, (int, float)) or x is None for x in v):
        return "[" + ", ".join(_show(x) for x in v[:12]) + (" …]" if len(v) > 12 else "]")
    return str(v)


def _evidence_rows(evidence: dict, prefix: str = "") -> list[tuple[str, str]]:
    """(name, value) rows of a finding's evidence, nested records flattened ("edits · add marker · z");
    the long curves drawn as pictures are left out."""
    rows: list[tuple[str, str]] = []
    for k, v in evidence.items():
        if k in CURVES:
            continue
        name = f"{prefix}{k}"
        if isinstance(v, dict):
            rows += _evidence_rows(v, f"{name} · ")
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            rows += [(f"{name} {i + 1}", " · ".join(f"{a} {b}" for a, b in _evidence_rows(x))) for i, x in enumerate(v)]
        else:
            rows.append((name, _show(v)))
    return rows


_STYLE = """body{font:14px/1.45 system-ui,sans-serif;max-width:1100px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}h3{font-size:14px;margin:16px 0 4px}
.muted{color:#666;font-size:12.5px}table{border-collapse:collapse;font-size:12.5px;margin:4px 0}
td{border:1px solid #ddd;padding:2px 6px;vertical-align:top}figure{display:inline-block;margin:4px 12px 4px 0;vertical-align:top}
figcaption{font-size:11.5px;color:#555;max-width:420px}img{image-rendering:pixelated;border:1px solid #ccc}"""


def to_html(report: dict, drawn: list[Drawn], options: list[str], limits: list[str]) -> str:
    e = html.escape
    kinds = {k["name"]: k for k in report["kinds"]}
    p = report["probe"]
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>tb_convviz findings: {e(report['run'])} at step {report['step']}</title>",
             f"<style>{_STYLE}</style></head><body>",
             f"<h1>Findings of run {e(report['run'])} at step {report['step']}</h1>",
             f'<p class="muted">{report["layers"]} conv layers, {report["filters"]:,} filters · tb_convviz {e(report["version"])} · '
             f"α = {report['alpha']:g} · ranked by severity: the kind's band, then how far past its threshold</p>",
             "<h2>Configuration</h2><ul>",
             f"<li>probe: {p['n']} images" + (f", classes {e(', '.join(f'{c} ({n})' for c, n in zip(p['classes'], p['support'])))}" if p["labelled"] else ", no labels") + "</li>"]
    parts += [f"<li>{e(o)}</li>" for o in options]
    parts += ["</ul><h2>What this probe can and cannot detect</h2><ul>", *(f"<li>{e(line)}</li>" for line in limits), "</ul>"]
    parts.append("<h2>Findings</h2>")
    if not drawn:
        parts.append("<p>Nothing in these logs meets a finding's rule at this step.</p>")
    for name, kind in kinds.items():
        mine = [d for d in drawn if d.finding["kind"] == name]
        if not mine:
            continue
        total = report["counts"].get(name, len(mine))
        parts.append(f'<h2 id="{e(name)}">{e(kind["label"])} ({len(mine)}{f" of {total}" if total > len(mine) else ""})</h2>')
        parts.append(f'<p class="muted">{e(kind["description"])} Rule: {e(kind["rule"])}.</p>')
        for d in mine:
            f = d.finding
            parts.append(f'<h3 class="finding" data-kind="{e(name)}">{e(f["summary"])}</h3>')
            parts.append(f'<p class="muted">{e(f["certainty"])} · severity {f["severity"]:.3f}</p>')
            parts.append("<table>" + "".join(f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in _evidence_rows(f["evidence"])) + "</table>")
            for pic in d.pictures:
                body = (f'<img alt="{e(pic.caption)}" src="data:image/png;base64,{base64.b64encode(pic.png).decode()}">'
                        if pic.png is not None else pic.svg)
                parts.append(f"<figure>{body}<figcaption>{e(pic.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def to_markdown(report: dict, drawn: list[Drawn], options: list[str], limits: list[str], assets: Path, link: str) -> str:
    """Markdown; pictures are written into `assets` (PNGs, and SVG charts) and linked as `link/<name>`."""
    assets.mkdir(parents=True, exist_ok=True)
    kinds = {k["name"]: k for k in report["kinds"]}
    p = report["probe"]
    out = [f"# Findings of run {report['run']} at step {report['step']}", "",
           f"{report['layers']} conv layers, {report['filters']:,} filters · tb_convviz {report['version']} · α = {report['alpha']:g}", "",
           "## Configuration", "", f"- probe: {p['n']} images" + (f", classes {', '.join(f'{c} ({n})' for c, n in zip(p['classes'], p['support']))}" if p["labelled"] else ", no labels"),
           *(f"- {o}" for o in options), "", "## What this probe can and cannot detect", "", *(f"- {line}" for line in limits), ""]
    n = 0
    for name, kind in kinds.items():
        mine = [d for d in drawn if d.finding["kind"] == name]
        if not mine:
            continue
        out += [f"## {kind['label']} ({len(mine)})", "", f"{kind['description']} Rule: {kind['rule']}.", ""]
        for d in mine:
            f = d.finding
            out += [f"### {f['summary']}", "", f"*{f['certainty']}* · severity {f['severity']:.3f}", "",
                    "| evidence | value |", "| --- | --- |", *(f"| {k} | {v.replace('|', '/')} |" for k, v in _evidence_rows(f["evidence"])), ""]
            for pic in d.pictures:
                n += 1
                name_ = f"finding{n}.{'png' if pic.png is not None else 'svg'}"
                (assets / name_).write_bytes(pic.png if pic.png is not None else pic.svg.encode())
                out += [f"![{pic.caption}]({link}/{name_})", ""]
    return "\n".join(out)


def write_report(logdir: str, run: str, out: str, step: Optional[int] = None, form: str = "html") -> Path:
    """Write the report of `run` to `out` (HTML, or Markdown with its pictures in `<out>_files/`)."""
    report, drawn, options, limits = build(logdir, run, step)
    path = Path(out)
    if form == "md":
        assets = path.with_name(path.stem + "_files")
        path.write_text(to_markdown(report, drawn, options, limits, assets, assets.name), encoding="utf-8")
    else:
        path.write_text(to_html(report, drawn, options, limits), encoding="utf-8")
    return path
