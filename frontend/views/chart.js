// Small charts: SVG line charts (a filter's history over steps, a 1-D kernel or activation over
// time), SVG polar charts (orientation tuning) and HTML bar lists (a few signed or positive values).

import { formatNumber } from "../numeric.js";
import { axisTicks, exponentText, tickLabels } from "../ticks.js";
import { el, svg } from "./controls.js";
import { pngButton } from "./download.js";

/** A chart's title, with a button that saves the chart as PNG. @param {string} title @param {HTMLElement} figure */
function caption(title, figure) {
  const box = el("figcaption", "cvz-chart-title", title);
  box.append(pngButton(() => figure, title));
  return box;
}

/**
 * @typedef {{label: string, values: Array<?number>, className?: string}} Series
 * @typedef {{title: string, x: number[], series: Series[], xLabel: string, yLabel: string,
 *   format?: (v: number) => string, percent?: boolean, current?: number, testid?: string, width?: number, height?: number,
 *   band?: {lo: Array<?number>, hi: Array<?number>, label: string}}} ChartSpec
 *   xLabel, yLabel: the axis titles (what and, where it has one, the unit); format: a value's text in
 *   its tooltip (the ticks are round numbers, ticks.js); percent: fractions, ticked in percent;
 *   band: an interval per x (the first series' confidence interval), drawn shaded behind the lines
 */

/**
 * A line chart of one or more series over shared x values; missing values break the line.
 * @param {ChartSpec} spec
 * @returns {HTMLElement}
 */
export function lineChart(spec) {
  // Drawn at about a detail panel's width and scaled to the panel's (CSS), so it fills it.
  const width = spec.width ?? 520;
  const height = spec.height ?? 150;
  const pad = { left: 58, right: 10, top: 8, bottom: 30 };
  const figure = el("figure", "cvz-chart");
  if (spec.testid) figure.dataset.testid = spec.testid;
  figure.append(caption(spec.title, figure));

  const bounds = spec.band ? [...spec.band.lo, ...spec.band.hi] : [];
  const finite = [...spec.series.flatMap((s) => s.values), ...bounds].filter(
    (v) => v !== null && v !== undefined && Number.isFinite(v),
  );
  const root = svg("svg", { width, height, viewBox: `0 0 ${width} ${height}`, role: "img", class: "cvz-line-chart" });
  root.setAttribute("aria-label", spec.title);
  figure.append(root);
  if (finite.length === 0 || spec.x.length === 0) {
    figure.append(el("div", "cvz-chart-empty", "no values logged"));
    return figure;
  }
  // Round ticks spanning the values; the axis runs from the lowest tick to the highest.
  const yAxis = axisTicks(Math.min(...finite), Math.max(...finite), { count: 4 });
  const [lo, hi] = [yAxis.lo, yAxis.hi];
  const x0 = spec.x[0];
  const x1 = spec.x[spec.x.length - 1];
  const sx = (/** @type {number} */ x) =>
    pad.left + (x1 === x0 ? (width - pad.left - pad.right) / 2 : ((x - x0) / (x1 - x0)) * (width - pad.left - pad.right));
  const sy = (/** @type {number} */ y) => pad.top + (1 - (y - lo) / (hi - lo)) * (height - pad.top - pad.bottom);

  const axis = svg("g", { class: "cvz-chart-axis" });
  /** @param {string} text @param {Record<string, string|number>} attrs */
  const label = (text, attrs) => {
    const t = svg("text", attrs);
    t.textContent = text;
    axis.append(t);
    return t;
  };
  // Fractions shown as percentages read in percent on the axis too ("−5%", not "−0.05").
  const yStep = yAxis.ticks.length > 1 ? yAxis.ticks[1] - yAxis.ticks[0] : 1;
  const yLabels = spec.percent ? tickLabels(yAxis.ticks.map((t) => t * 100), yStep * 100).labels.map((l) => `${l}%`) : yAxis.labels;
  // A light grid line and a label per y tick; a darker line at zero where the values change sign.
  yAxis.ticks.forEach((tick, i) => {
    const y = sy(tick);
    const zero = tick === 0 && lo < 0 && hi > 0;
    axis.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: zero ? "cvz-chart-zero" : "cvz-chart-grid" }));
    label(yLabels[i], { x: pad.left - 4, y: y + 3, "text-anchor": "end" }).dataset.tick = "y";
  });
  axis.append(
    svg("line", { x1: pad.left, x2: width - pad.right, y1: height - pad.bottom, y2: height - pad.bottom }),
    svg("line", { x1: pad.left, x2: pad.left, y1: pad.top, y2: height - pad.bottom }),
  );
  // x ticks inside the logged range: whole numbers when every x is one (steps), round values otherwise.
  const integer = spec.x.every((v) => Number.isInteger(v));
  const xAxis = x1 === x0 ? { ticks: [x0], labels: [String(x0)] } : axisTicks(x0, x1, { count: 5, integer });
  xAxis.ticks.forEach((tick, i) => {
    if (tick < x0 || tick > x1) return;
    axis.append(svg("line", { x1: sx(tick), x2: sx(tick), y1: height - pad.bottom, y2: height - pad.bottom + 3 }));
    label(xAxis.labels[i], { x: sx(tick), y: height - pad.bottom + 13, "text-anchor": "middle" }).dataset.tick = "x";
  });
  const xTitle = svg("text", { x: (pad.left + width - pad.right) / 2, y: height - 3, "text-anchor": "middle", class: "cvz-axis-title" });
  xTitle.textContent = spec.xLabel;
  xTitle.dataset.axis = "x";
  // The y title runs up the left edge, centred on the plot; a shared power of ten of the ticks goes in it.
  const yMid = (pad.top + height - pad.bottom) / 2;
  const yTitle = svg("text", { x: 10, y: yMid, "text-anchor": "middle", transform: `rotate(-90 10 ${yMid})`, class: "cvz-axis-title" });
  const power = spec.percent ? "" : exponentText(yAxis.exponent);
  yTitle.textContent = power ? `${spec.yLabel} (${power})` : spec.yLabel;
  yTitle.dataset.axis = "y";
  axis.append(xTitle, yTitle);
  root.append(axis);

  if (spec.current !== undefined && spec.x.includes(spec.current)) {
    root.append(
      svg("line", { class: "cvz-chart-current", x1: sx(spec.current), x2: sx(spec.current), y1: pad.top, y2: height - pad.bottom }),
    );
  }
  if (spec.band) root.append(bandPath(spec.band, spec.x, sx, sy));
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
        tip.textContent = `${s.label} at ${spec.xLabel} ${spec.x[i]}: ${spec.format ? spec.format(v) : formatNumber(v, 4)}`;
        dot.append(tip);
        root.append(dot);
      });
    }
  });
  if (spec.series.length > 1 || spec.band) {
    const legend = el("div", "cvz-chart-legend");
    spec.series.forEach((s, k) => {
      const item = el("span", `cvz-chart-key ${s.className ?? `cvz-series-${k}`}`, s.label);
      legend.append(item);
    });
    if (spec.band) legend.append(el("span", "cvz-chart-key cvz-chart-band-key", spec.band.label));
    figure.append(legend);
  }
  return figure;
}

/**
 * An interval over x as one shaded shape per run of steps where both bounds are known.
 * @param {{lo: Array<?number>, hi: Array<?number>, label: string}} band @param {number[]} x
 * @param {(x: number) => number} sx @param {(y: number) => number} sy
 */
function bandPath(band, x, sx, sy) {
  const known = (/** @type {number} */ i) => {
    const [lo, hi] = [band.lo[i], band.hi[i]];
    return lo !== null && hi !== null && Number.isFinite(lo) && Number.isFinite(hi);
  };
  let d = "";
  for (let i = 0; i < x.length; ) {
    if (!known(i)) {
      i++;
      continue;
    }
    let j = i;
    while (j + 1 < x.length && known(j + 1)) j++;
    const upper = [];
    const lower = [];
    for (let k = i; k <= j; k++) {
      upper.push(`${sx(x[k]).toFixed(1)},${sy(/** @type {number} */ (band.hi[k])).toFixed(1)}`);
      lower.unshift(`${sx(x[k]).toFixed(1)},${sy(/** @type {number} */ (band.lo[k])).toFixed(1)}`);
    }
    // A single step's interval is a short vertical bar: widen it to be seen.
    if (i === j) d += `M${sx(x[i]) - 2},${sy(/** @type {number} */ (band.hi[i]))}h4V${sy(/** @type {number} */ (band.lo[i]))}h-4Z`;
    else d += `M${upper.join("L")}L${lower.join("L")}Z`;
    i = j + 1;
  }
  const path = svg("path", { d, class: "cvz-chart-band" });
  path.dataset.testid = "chart-band";
  const tip = svg("title", {});
  tip.textContent = band.label;
  path.append(tip);
  return path;
}

/**
 * @typedef {{title: string, angles: number[], series: Series[], axial: boolean, marker?: ?number,
 *   ring?: {value: number, label: string}, size?: number, testid?: string}} PolarSpec
 *   angles: degrees, counter-clockwise from the right-pointing horizontal; axial: the values are of
 *   orientations (θ and θ + 180° are one), drawn on both sides; marker: an angle drawn as a dashed
 *   spoke (a preferred orientation); ring: a reference value drawn as a labelled circle.
 */

/**
 * A polar chart: radius ∝ value, from 0 at the centre to the largest value (or the ring) at the edge.
 * @param {PolarSpec} spec
 * @returns {HTMLElement}
 */
export function polarChart(spec) {
  const size = spec.size ?? 160;
  const c = size / 2;
  const radius = c - 14; // room for the angle labels
  const figure = el("figure", "cvz-chart cvz-polar");
  if (spec.testid) figure.dataset.testid = spec.testid;
  figure.append(caption(spec.title, figure));
  const root = svg("svg", { width: size, height: size, viewBox: `0 0 ${size} ${size}`, role: "img" });
  root.setAttribute("aria-label", spec.title);
  figure.append(root);
  const finite = spec.series.flatMap((s) => s.values.filter((v) => v !== null && Number.isFinite(v)));
  if (finite.length === 0) {
    figure.append(el("div", "cvz-chart-empty", "no values logged"));
    return figure;
  }
  const top = Math.max(...finite, spec.ring?.value ?? 0) || 1;
  /** @param {number} deg @param {number} r @returns {[number, number]} SVG y grows downwards */
  const at = (deg, r) => [c + r * Math.cos((deg * Math.PI) / 180), c - r * Math.sin((deg * Math.PI) / 180)];

  const grid = svg("g", { class: "cvz-chart-axis" });
  for (const k of [0.5, 1]) grid.append(svg("circle", { cx: c, cy: c, r: k * radius, fill: "none" }));
  for (const deg of [0, 45, 90, 135]) {
    const [x1, y1] = at(deg, radius);
    const [x2, y2] = at(deg + 180, radius);
    grid.append(svg("line", { x1, y1, x2, y2 }));
  }
  /** @param {string} text @param {number} deg @param {string} anchor */
  const label = (text, deg, anchor) => {
    const [x, y] = at(deg, radius + 7);
    const t = svg("text", { x, y: y + 3, "text-anchor": anchor });
    t.textContent = text;
    grid.append(t);
  };
  label("0°", 0, "start");
  label("90°", 90, "middle");
  if (!spec.axial) label("180°", 180, "end");
  root.append(grid);

  if (spec.ring) {
    const ring = svg("circle", { cx: c, cy: c, r: (spec.ring.value / top) * radius, fill: "none", class: "cvz-polar-ring" });
    const tip = svg("title", {});
    tip.textContent = spec.ring.label;
    ring.append(tip);
    root.append(ring);
  }
  if (spec.marker !== undefined && spec.marker !== null && Number.isFinite(spec.marker)) {
    const [x1, y1] = at(spec.marker, radius);
    const [x2, y2] = spec.axial ? at(spec.marker + 180, radius) : [c, c];
    root.append(svg("line", { x1, y1, x2, y2, class: "cvz-chart-current" }));
  }
  spec.series.forEach((s, k) => {
    const className = s.className ?? `cvz-series-${k}`;
    /** @type {Array<[number, ?number]>} */
    const points = spec.angles.map((deg, i) => [deg, s.values[i]]);
    if (spec.axial) points.push(...points.map(([deg, v]) => /** @type {[number, ?number]} */ ([deg + 180, v])));
    let d = "";
    let pen = false;
    for (const [deg, v] of points) {
      if (v === null || !Number.isFinite(v)) {
        pen = false;
        continue;
      }
      const [x, y] = at(deg, (Math.max(0, v) / top) * radius);
      d += `${pen ? "L" : "M"}${x.toFixed(1)},${y.toFixed(1)}`;
      pen = true;
    }
    // An orientation curve closes on itself; a curve over part of the circle closes through the centre.
    const whole = points.every(([, v]) => v !== null && Number.isFinite(v));
    const shape = !whole ? d : spec.axial ? `${d}Z` : `M${c},${c}L${d.slice(1)}Z`;
    root.append(svg("path", { d: shape, class: `cvz-chart-line cvz-polar-area ${className}` }));
    spec.angles.forEach((deg, i) => {
      const v = s.values[i];
      if (v === null || !Number.isFinite(v)) return;
      const [x, y] = at(deg, (Math.max(0, v) / top) * radius);
      const dot = svg("circle", { cx: x, cy: y, r: 2, class: `cvz-chart-dot ${className}` });
      const tip = svg("title", {});
      tip.textContent = `${s.label} at ${formatNumber(deg)}°: ${formatNumber(v, 4)}`;
      dot.append(tip);
      root.append(dot);
    });
  });
  if (spec.series.length > 1 || spec.ring) {
    const legend = el("div", "cvz-chart-legend");
    spec.series.forEach((s, k) => legend.append(el("span", `cvz-chart-key ${s.className ?? `cvz-series-${k}`}`, s.label)));
    if (spec.ring) legend.append(el("span", "cvz-chart-key cvz-polar-ring-key", spec.ring.label));
    figure.append(legend);
  }
  // The radius scale below the plot, not on it: a label inside would sit on the curve.
  const scale = el("div", "cvz-polar-scale", `grid circles: ${formatNumber(top / 2, 2)}, ${formatNumber(top, 2)}`);
  scale.dataset.testid = "polar-scale";
  figure.append(scale);
  return figure;
}

/**
 * @typedef {{label: string, value: ?number, text?: string, title?: string, badge?: string, mark?: ?number}} Bar
 *   text: the value as shown (default formatNumber); title: a tooltip; badge: a flag shown after the
 *   value; mark: a reference value (the layer's median) drawn as a tick on the track
 * @typedef {{items: Bar[], signed?: boolean, max?: number, testid?: string, itemTestid?: string}} BarSpec
 *   signed: bars grow left (negative) or right (positive) of a middle zero line; max: |value| at full length
 */

/**
 * A list of labelled horizontal bars on one scale.
 * @param {BarSpec} spec
 * @returns {HTMLElement}
 */
export function barList(spec) {
  const list = el("div", `cvz-bars${spec.signed ? " cvz-bars-signed" : ""}`);
  if (spec.testid) list.dataset.testid = spec.testid;
  const finite = spec.items.flatMap((b) => [b.value, b.mark ?? null]).filter((v) => v !== null && Number.isFinite(v));
  const top = spec.max ?? (Math.max(0, ...finite.map((v) => Math.abs(/** @type {number} */ (v)))) || 1);
  /** Where `v` lies along the track, in %. @param {number} v */
  const position = (v) => {
    const share = Math.min(1, Math.abs(v) / top);
    return spec.signed ? 50 + Math.sign(v) * share * 50 : share * 100;
  };
  for (const b of spec.items) {
    const row = el("div", "cvz-bars-row");
    if (spec.itemTestid) row.dataset.testid = spec.itemTestid;
    if (b.title) row.title = b.title;
    const track = el("span", "cvz-bars-track");
    const bar = el("span", "cvz-bars-bar");
    const v = b.value !== null && Number.isFinite(b.value) ? b.value : 0;
    const [from, to] = spec.signed ? [Math.min(50, position(v)), Math.max(50, position(v))] : [0, position(v)];
    bar.style.left = `${from}%`;
    bar.style.width = `${to - from}%`;
    bar.classList.toggle("cvz-bars-negative", v < 0);
    track.append(bar);
    if (b.mark !== undefined && b.mark !== null && Number.isFinite(b.mark)) {
      const tick = el("span", "cvz-bars-mark");
      tick.style.left = `${position(b.mark)}%`;
      tick.title = `layer median ${formatNumber(b.mark)}`;
      track.append(tick);
    }
    row.append(el("span", "cvz-bars-label", b.label), track, el("span", "cvz-bars-value", b.text ?? formatNumber(b.value)));
    if (b.badge) {
      const badge = el("span", "cvz-badge", b.badge);
      badge.dataset.testid = "badge";
      row.append(badge);
    }
    list.append(row);
  }
  return list;
}
