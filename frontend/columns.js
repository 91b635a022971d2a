// Per-filter columns as the server declares them (the /index answer's `columns`, the /table answer):
// how a column's numbers read, which end of it comes first, how columns group, and the table as
// CSV. Nothing here knows a column by name: a user's FilterMetric reads like a built-in one.
// Pure functions with no DOM, so node's test runner checks them (tests/js/).

import { formatCount, formatNumber, formatP, formatPercent, formatSigned, median, present, sortOrder } from "./numeric.js";

/**
 * @typedef {{name: string, label: string, unit: string, description: string, better: ?("higher"|"lower"),
 *   group: string, ci: ?string, format: "number"|"percent"|"count"|"flag"|"angle"|"signed"|"index"|"pvalue", kind: string,
 *   first?: "low"|"high"|"abs", record_step?: number}} Column
 *   better: which end is better (null: neither); first: which filters a sorted table starts with (the
 *   lowest values, the highest, the largest magnitudes); ci: the name of its (F, 2) interval companion;
 *   record_step: the step of the record its values come from (the /table answer's columns)
 * @typedef {{shape: number[], values: ArrayLike<number>}} Values  decoded, NaN for missing
 * @typedef {{run: string, layer: string, step: number, filters: number, columns: Column[],
 *   values: Record<string, Values>}} Table  the /table answer, its values decoded
 */

/**
 * The columns in their groups, groups in the order their first column comes, columns in theirs.
 * @param {Column[]} columns @returns {Array<{group: string, columns: Column[]}>}
 */
export function groupColumns(columns) {
  /** @type {Map<string, Column[]>} */
  const groups = new Map();
  for (const c of columns) {
    const list = groups.get(c.group) ?? [];
    list.push(c);
    groups.set(c.group, list);
  }
  return [...groups].map(([group, list]) => ({ group, columns: list }));
}

/**
 * The columns in group order (a group's columns together, where the first of it came), so a header
 * row over groups spans neighbours.
 * @param {Column[]} columns @returns {Column[]}
 */
export function inGroupOrder(columns) {
  return groupColumns(columns).flatMap((g) => g.columns);
}

/** A group's name for people: "impact" → "Impact", "" → "Other". @param {string} group */
export function groupTitle(group) {
  return group ? group.charAt(0).toUpperCase() + group.slice(1).replaceAll("_", " ") : "Other";
}

/**
 * The unit a header shows after the label, or "" when the numbers carry it themselves (a percent
 * sign, a degree sign) or there is none.
 * @param {Column} column
 */
export function headerUnit(column) {
  if (!column.unit || column.format === "percent" || column.format === "flag") return "";
  if (column.format === "angle" && isDegrees(column.unit)) return "";
  return column.unit;
}

/** @param {string} unit */
function isDegrees(unit) {
  return ["°", "deg", "degree", "degrees", ""].includes(unit);
}

/**
 * A column's header text: its label, then its unit in parentheses where the numbers do not carry it.
 * @param {Column} column
 */
export function headerText(column) {
  const unit = headerUnit(column);
  return unit ? `${column.label} (${unit})` : column.label;
}

/**
 * What a header's tooltip says: the description, which end is better and where the numbers come
 * from when that is not the step shown.
 * @param {Column} column @param {number} [step] the step shown
 */
export function headerTitle(column, step) {
  // Sentences: a description without a full stop gets one before what follows it.
  const parts = [sentence(column.description || column.label)];
  if (column.better) parts.push(`${column.better === "higher" ? "Higher" : "Lower"} is better.`);
  if (column.ci) parts.push("Its 95% interval is drawn beside the value.");
  if (step !== undefined && column.record_step !== undefined && column.record_step !== step) {
    parts.push(`From step ${column.record_step}, the last record at or before step ${step}.`);
  }
  return parts.join(" ");
}

/** `text` ending in a full stop (or ? or !). @param {string} text */
function sentence(text) {
  return /[.!?]$/.test(text.trim()) ? text.trim() : `${text.trim()}.`;
}

/**
 * Whether a percent column holds changes (some value below zero): those read signed ("+1.5%").
 * @param {ArrayLike<number>} values
 */
export function holdsChanges(values) {
  for (let i = 0; i < values.length; i++) if (values[i] < 0) return true;
  return false;
}

/**
 * One value of a column for people, by its declared format; "—" when missing.
 * @param {Column} column @param {?number|undefined} v
 * @param {{signed?: boolean}} [options] signed: a percent column of changes
 * @returns {string}
 */
export function formatValue(column, v, { signed = true } = {}) {
  if (v === null || v === undefined || Number.isNaN(v)) return "—";
  switch (column.format) {
    case "percent":
      return formatPercent(v, { signed });
    case "count":
      return formatCount(v);
    case "index":
      return present(v) ? String(Math.round(v)) : "—";
    case "flag":
      return v ? "yes" : "no";
    case "signed":
      return formatSigned(v);
    case "pvalue":
      return formatP(v);
    case "angle":
      return isDegrees(column.unit) ? (present(v) ? `${Math.round(v)}°` : "—") : formatNumber(v);
    default:
      return formatNumber(v);
  }
}

/**
 * Which way a column sorts first: most notable first, as its declaration's `first` says; without
 * one, the better end first, and with neither, the largest magnitude (a change) or value first.
 * @param {Column} column @returns {"descending"|"ascending"|"magnitude"}
 */
export function naturalOrder(column) {
  if (column.first === "low") return "ascending";
  if (column.first === "high") return "descending";
  if (column.first === "abs") return "magnitude";
  if (column.better === "higher") return "descending";
  if (column.better === "lower") return "ascending";
  return column.format === "signed" || column.format === "percent" ? "magnitude" : "descending";
}

/**
 * Filter indices ordered by a column: its natural order (naturalOrder), or that reversed; missing
 * values last either way, ties by index.
 * @param {ArrayLike<number>} values (F,) @param {Column} column @param {boolean} reverse
 * @returns {number[]}
 */
export function columnOrder(values, column, reverse) {
  const natural = naturalOrder(column);
  const keys = natural === "magnitude" ? Array.from(values, (v) => Math.abs(v)) : values;
  return sortOrder(keys, (natural !== "ascending") !== reverse);
}

/**
 * The column a table sorts by when none was chosen: the first (in group order) with a better end,
 * else the first.
 * @param {Column[]} columns @returns {?Column}
 */
export function defaultSortColumn(columns) {
  const ordered = inGroupOrder(columns);
  return ordered.find((c) => c.better) ?? ordered[0] ?? null;
}

/**
 * A number as a CSV cell, as Python's repr(float(x)) writes it (JavaScript's shortest round-trip
 * text is the same); empty when missing; a flag as 0 or 1.
 * @param {number} v @param {Column} column
 */
export function csvNumber(v, column) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "";
  if (column.format === "flag") return v ? "1" : "0";
  return String(v);
}

/**
 * The table as CSV rows, the numbers `logs.to_csv(run, layer, step)` writes: a header `filter`,
 * then each column's name in the answer's order, its interval as `<name>_lo`, `<name>_hi` (the
 * column's name) right after it; one row per filter by index.
 * @param {Table} table @returns {string[][]}
 */
export function tableCsvRows(table) {
  /** @type {Array<[string, (f: number) => string]>} */
  const cells = [];
  for (const c of table.columns) {
    const a = table.values[c.name];
    if (!a || a.shape.length !== 1) continue;
    cells.push([c.name, (f) => csvNumber(a.values[f], c)]);
    const ci = c.ci ? table.values[c.ci] : undefined;
    if (c.ci && ci && ci.shape.length === 2 && ci.shape[1] === 2) {
      const bound = { ...c, format: /** @type {const} */ ("number") };
      cells.push([`${c.name}_lo`, (f) => csvNumber(ci.values[2 * f], bound)]);
      cells.push([`${c.name}_hi`, (f) => csvNumber(ci.values[2 * f + 1], bound)]);
    }
  }
  const rows = [["filter", ...cells.map(([name]) => name)]];
  for (let f = 0; f < table.filters; f++) rows.push([String(f), ...cells.map(([, cell]) => cell(f))]);
  return rows;
}

/**
 * Why a filter's row is greyed, in words that keep its interval and the layer's test apart: the
 * interval of the change the significance flag judges is for this filter alone (unadjusted), the
 * p-value adjusted for the layer's tested filters, so an interval excluding 0 beside "not
 * significant" is no contradiction. Null when the table lacks either column.
 * @param {Table} table @param {number} f @param {string} significant the flag's column
 * @param {string} adjusted the adjusted p-value's column
 * @returns {?string}
 */
export function notSignificantText(table, f, significant, adjusted) {
  const flag = table.columns.find((c) => c.name === significant);
  const change = flag ? table.columns.find((c) => c.ci && c.kind === flag.kind && c.group === flag.group) : undefined;
  const p = table.values[adjusted];
  if (!change || !p || !table.values[change.name]) return null;
  const tested = Array.from(p.values).filter(present).length;
  const interval = intervalOf(table, change, f);
  const v = table.values[change.name].values[f];
  const range = interval ? ` [${formatValue(change, interval[0])}, ${formatValue(change, interval[1])}]` : "";
  return (
    `${change.label} ${formatValue(change, v)}${range}: 95% interval for this filter alone, not adjusted; ` +
    `not significant once adjusted for the layer's ${tested} tested filters (p = ${formatP(p.values[f])}, Benjamini–Hochberg).`
  );
}

/**
 * A column's interval for filter `f`, or null when it has none or either end is missing.
 * @param {Table} table @param {Column} column @param {number} f @returns {?[number, number]}
 */
export function intervalOf(table, column, f) {
  const ci = column.ci ? table.values[column.ci] : undefined;
  if (!ci || ci.shape.length !== 2 || ci.shape[1] !== 2) return null;
  const [lo, hi] = [ci.values[2 * f], ci.values[2 * f + 1]];
  return present(lo) && present(hi) ? [lo, hi] : null;
}

/**
 * The columns the table shows: those of `columns` that hold (F,) values (an interval companion
 * travels with its column, not as one of its own).
 * @param {Table} table @returns {Column[]}
 */
export function shownColumns(table) {
  const companions = new Set(table.columns.map((c) => c.ci).filter((n) => n));
  return inGroupOrder(table.columns.filter((c) => !companions.has(c.name) && table.values[c.name]?.shape.length === 1));
}

/**
 * One filter's row of the table for people: per column its label, its value as declared (with its
 * interval where it has one), where the value ranks in the layer in the column's sort order (not
 * for yes/no and index columns) and the description with the layer's median, for a detail's facts.
 * @param {Table} table @param {Column[]} columns @param {number} f
 * @returns {Array<{name: string, label: string, text: string, title: string}>}
 */
export function filterFacts(table, columns, f) {
  return columns.flatMap((c) => {
    const a = table.values[c.name];
    if (!a || a.shape.length !== 1) return [];
    const interval = intervalOf(table, c, f);
    // A column whose values or intervals go below zero holds changes: "+16.4%", not "16.4%" beside "-16.4%".
    const companion = c.ci ? table.values[c.ci] : undefined;
    const signed = holdsChanges(a.values) || (interval !== null && companion !== undefined && holdsChanges(companion.values));
    const v = Number(a.values[f]);
    const range = interval ? ` [${formatValue(c, interval[0], { signed })}, ${formatValue(c, interval[1], { signed })}]` : "";
    const unit = headerUnit(c);
    const ranked = c.format !== "flag" && c.format !== "index" && present(v);
    const known = Array.from(a.values).filter(present).length;
    const { rank, ties } = ranked ? rankOf(a.values, c, v) : { rank: 0, ties: 0 };
    const title = [c.description];
    if (interval) title.push("Bracketed: its 95% interval.");
    if (ranked) {
      const tied = ties ? `, tied with ${ties} other filter${ties > 1 ? "s" : ""}` : "";
      title.push(`Rank ${rank} of ${known} in the layer, ${FIRST_TEXT[naturalOrder(c)]}${tied}; layer median ${formatValue(c, median(a.values), { signed })}.`);
    }
    return [{
      name: c.name,
      label: c.label,
      text: `${formatValue(c, v, { signed })}${unit && present(v) ? ` ${unit}` : ""}${range}${ranked && known > 1 ? ` · ${rank}/${known}` : ""}`,
      title: title.join(" "),
    }];
  });
}

/**
 * Where value `v` ranks among a column's present values in its natural order: 1 + how many come
 * before it, so equal values share a rank (a p-value of 1 held by six filters is not "7/8" for the
 * last of them), and how many other filters hold the same value.
 * @param {ArrayLike<number>} values @param {Column} column @param {number} v
 * @returns {{rank: number, ties: number}}
 */
export function rankOf(values, column, v) {
  const natural = naturalOrder(column);
  const key = natural === "magnitude" ? Math.abs : (/** @type {number} */ x) => x;
  const mine = key(v);
  let ahead = 0;
  let same = 0;
  for (let i = 0; i < values.length; i++) {
    if (!present(values[i])) continue;
    const k = key(values[i]);
    if (k === mine) same += 1;
    else if (natural === "ascending" ? k < mine : k > mine) ahead += 1;
  }
  return { rank: ahead + 1, ties: Math.max(0, same - 1) };
}

/** How a rank counts, by the column's natural order. */
const FIRST_TEXT = { descending: "highest first", ascending: "lowest first", magnitude: "largest magnitude first" };

/**
 * The records of the table older than its step, by kind: a kind not logged at every step (full
 * kernels, a large model's responses taking turns, a metric logged every few epochs) shows its
 * last record at or before the step.
 * @param {Table} table @returns {Array<{kind: string, recordStep: number, labels: string[]}>}
 */
export function olderRecords(table) {
  /** @type {Map<string, {kind: string, recordStep: number, labels: string[]}>} */
  const kinds = new Map();
  for (const c of table.columns) {
    if (c.record_step === undefined || c.record_step === table.step) continue;
    const entry = kinds.get(c.kind) ?? { kind: c.kind, recordStep: c.record_step, labels: [] };
    entry.labels.push(c.label);
    kinds.set(c.kind, entry);
  }
  return [...kinds.values()];
}

/**
 * @typedef {Column & {value: ?number, filters?: number, steps?: number[]}} LayerScalar
 *   a whole-layer number of the /table answer's `scalars`; one pooled over sampled filters (the
 *   Taylor-vs-exact ρ) says over how many (`filters`) and from which logs (`steps`)
 */

/**
 * A whole-layer number for people, by its declared format; a pooled one with its sample beside it:
 * "0.62 over 96 sampled filters from steps 3, 5, 7", and "not enough sampled filters yet" while
 * the pool is too small to give a value.
 * @param {LayerScalar} scalar @returns {string}
 */
export function scalarText(scalar) {
  const value = scalar.value ?? NaN;
  const pooled = scalar.filters !== undefined && scalar.steps !== undefined;
  if (!pooled) return formatValue(scalar, value, { signed: false });
  if (!present(value)) return "not enough sampled filters yet";
  const filters = `${formatCount(scalar.filters)} sampled filter${scalar.filters === 1 ? "" : "s"}`;
  return `${formatValue(scalar, value, { signed: false })} over ${filters} from ${stepsText(scalar.steps)}`;
}

/**
 * Steps for people: "step 4", "steps 3, 5, 7"; more than five read "steps 3, 5, …, 19".
 * @param {number[]} steps @returns {string}
 */
export function stepsText(steps) {
  if (steps.length === 1) return `step ${steps[0]}`;
  const shown = steps.length > 5 ? [steps[0], steps[1], "…", steps[steps.length - 1]] : steps;
  return `steps ${shown.join(", ")}`;
}

/**
 * What a whole-layer number's tooltip says: its description (with where the value comes from when
 * that is not the step shown) and, for a pooled one, what its sample counts.
 * @param {LayerScalar} scalar @param {number} [step] the step shown
 */
export function scalarTitle(scalar, step) {
  const parts = [headerTitle(scalar, step)];
  if (scalar.filters !== undefined && scalar.steps !== undefined) {
    parts.push(
      `Pooled over the filters sampled at ${stepsText(scalar.steps)} (a filter sampled at two steps counts twice).`,
    );
  }
  return parts.join(" ");
}
