// Small SVG line charts: a filter's history over steps, a 1-D kernel or activation over time.

import { el, formatNumber } from "./controls.js";

const SVG = "http://www.w3.org/2000/svg";

/**
 * @param {string} tag @param {Record<string, string|number>} attrs
 * @returns {SVGElement}
 */
function svg(tag, attrs) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

/**
 * @typedef {{label: string, values: Array<?number>, className?: string}} Series
 * @typedef {{title: string, x: number[], series: Series[], current?: number, testid?: string,
 *   width?: number, height?: number, xLabel?: string}} ChartSpec
 */

/**
 * A line chart of one or more series over shared x values; missing values break the line.
 * @param {ChartSpec} spec
 * @returns {HTMLElement}
 */
export function lineChart(spec) {
  const width = spec.width ?? 340;
  const height = spec.height ?? 96;
  const pad = { left: 46, right: 8, top: 8, bottom: 18 };
  const figure = el("figure", "cvz-chart");
  if (spec.testid) figure.dataset.testid = spec.testid;
  figure.append(el("figcaption", "cvz-chart-title", spec.title));

  const finite = spec.series.flatMap((s) => s.values.filter((v) => v !== null && Number.isFinite(v)));
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img" });
  root.setAttribute("aria-label", spec.title);
  figure.append(root);
  if (finite.length === 0 || spec.x.length === 0) {
    figure.append(el("div", "cvz-chart-empty", "no values logged"));
    return figure;
  }
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  if (hi === lo) {
    const d = Math.abs(hi) * 0.05 || 1;
    lo -= d;
    hi += d;
  }
  const x0 = spec.x[0];
  const x1 = spec.x[spec.x.length - 1];
  const sx = (/** @type {number} */ x) =>
    pad.left + (x1 === x0 ? (width - pad.left - pad.right) / 2 : ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right));
  const sy = (/** @type {number} */ y) => pad.top + (1 - (y - lo) / (hi - lo)) * (height - pad.top - pad.bottom);

  const axis = svg("g", { class: "cvz-chart-axis" });
  axis.append(
    svg("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom }),
    svg("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom }),
  );
  /** @param {string} text @param {Record<string, string|number>} attrs */
  const label = (text, attrs) => {
    const t = svg("text", attrs);
    t.textContent = text;
    axis.append(t);
  };
  label(formatNumber(hi), { x: pad.left - 4, y: pad.top + 4, "text-anchor": "end" });
  label(formatNumber(lo), { x: pad.left - 4, y: height - pad.bottom, "text-anchor": "end" });
  label(String(x0), { x: pad.left, y: height - 4, "text-anchor": "start" });
  if (x1 !== x0) label(String(x1), { x: width - pad.right, y: height - 4, "text-anchor": "end" });
  if (spec.xLabel) label(spec.xLabel, { x: (pad.left + width - pad.right) / 2, y: height - 4, "text-anchor": "middle" });
  root.append(axis);

  if (spec.current !== undefined && spec.x.includes(spec.current)) {
    root.append(
      svg("line", { class: "cvz-chart-current", x1: sx(spec.current), x2: sx(spec.current), y1: pad.top, y2: height - pad.bottom }),
    );
  }
  spec.series.forEach((s, k) => {
    const className = s.className ?? `cvz-series-${k}`;
    let d = "";
    let pen = false;
    s.values.forEach((v, i) => {
      if (v === null || !Number.isFinite(v)) {
        pen = false;
        return;
      }
      d += `${pen ? "L" : "M"}${sx(spec.x[i]).toFixed(1)},${sy(v).toFixed(1)}`;
      pen = true;
    });
    root.append(svg("path", { d, class: `cvz-chart-line ${className}` }));
    if (spec.x.length <= 60) {
      s.values.forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) return;
        const dot = svg("circle", { cx: sx(spec.x[i]), cy: sy(v), r: spec.x[i] === spec.current ? 3.5 : 2, class: `cvz-chart-dot ${className}` });
        const tip = svg("title", {});
        tip.textContent = `${s.label} at ${spec.x[i]}: ${formatNumber(v, 4)}`;
        dot.append(tip);
        root.append(dot);
      });
    }
  });
  if (spec.series.length > 1) {
    const legend = el("div", "cvz-chart-legend");
    spec.series.forEach((s, k) => {
      const item = el("span", `cvz-chart-key ${s.className ?? `cvz-series-${k}`}`, s.label);
      legend.append(item);
    });
    figure.append(legend);
  }
  return figure;
}
