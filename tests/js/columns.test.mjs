// Declared per-filter columns: formats, sort order, groups and the CSV (frontend/columns.js).
import assert from "node:assert/strict";
import test from "node:test";

import {
  columnOrder,
  defaultSortColumn,
  filterFacts,
  formatValue,
  groupColumns,
  headerText,
  headerTitle,
  intervalOf,
  notSignificantText,
  olderRecords,
  rankOf,
  scalarText,
  scalarTitle,
  shownColumns,
  stepsText,
  tableCsvRows,
} from "../../frontend/columns.js";

/** A declaration with made-up names: nothing in columns.js may know a column by its name. */
const col = (name, extra = {}) => ({
  name, label: name.toUpperCase(), unit: "", description: `what ${name} is`, better: null, group: "g",
  ci: null, format: "number", kind: "k", ...extra,
});

test("columns keep their groups together, groups in order of first appearance", () => {
  const cols = [col("a", { group: "x" }), col("b", { group: "y" }), col("c", { group: "x" })];
  assert.deepEqual(groupColumns(cols).map((g) => [g.group, g.columns.map((c) => c.name)]), [["x", ["a", "c"]], ["y", ["b"]]]);
});

test("a header names the unit only where the numbers do not carry it", () => {
  assert.equal(headerText(col("loss", { unit: "nats", label: "Δloss" })), "Δloss (nats)");
  assert.equal(headerText(col("acc", { unit: "%", format: "percent", label: "Δacc" })), "Δacc");
  assert.equal(headerText(col("theta", { unit: "°", format: "angle", label: "θ" })), "θ");
  assert.equal(headerText(col("theta", { unit: "rad", format: "angle", label: "θ" })), "θ (rad)");
  assert.equal(headerText(col("mine", { label: "Hoyer sparsity" })), "Hoyer sparsity");
});

test("a header's tooltip is the description, the better end and an older record's step", () => {
  const c = col("h", { description: "0 = every position active", better: "higher", record_step: 3 });
  assert.equal(headerTitle(c, 5), "0 = every position active. Higher is better. From step 3, the last record at or before step 5.");
  assert.equal(headerTitle({ ...c, record_step: 5, better: null }, 5), "0 = every position active.");
  assert.equal(headerTitle({ ...c, description: "Ends well.", better: null }), "Ends well.");
});

test("values read by their declared format", () => {
  assert.equal(formatValue(col("p", { format: "percent" }), -0.0625), "-6.3%");
  assert.equal(formatValue(col("p", { format: "percent" }), 0.5, { signed: false }), "50.0%");
  assert.equal(formatValue(col("n", { format: "count" }), 3), "3");
  assert.equal(formatValue(col("c", { format: "index" }), 4), "4");
  assert.equal(formatValue(col("f", { format: "flag" }), 1), "yes");
  assert.equal(formatValue(col("f", { format: "flag" }), 0), "no");
  assert.equal(formatValue(col("s", { format: "signed" }), 0.25), "+0.250");
  assert.equal(formatValue(col("a", { format: "angle", unit: "°" }), 44.6), "45°");
  assert.equal(formatValue(col("x"), 0.123456), "0.123");
  assert.equal(formatValue(col("x"), NaN), "—");
  assert.equal(formatValue(col("f", { format: "flag" }), NaN), "—");
});

test("the first sort puts the better end first; no better end: the largest (magnitude of a change) first", () => {
  const v = Float32Array.from([0.5, -2, NaN, 1]);
  assert.deepEqual(columnOrder(v, col("h", { better: "higher" }), false), [3, 0, 1, 2]);
  assert.deepEqual(columnOrder(v, col("h", { better: "higher" }), true), [1, 0, 3, 2]); // missing stays last
  assert.deepEqual(columnOrder(v, col("l", { better: "lower" }), false), [1, 0, 3, 2]);
  assert.deepEqual(columnOrder(v, col("s", { format: "signed" }), false), [1, 3, 0, 2]);
  assert.deepEqual(columnOrder(v, col("n"), false), [3, 0, 1, 2]);
  // The declaration's `first` wins over `better`: most accuracy lost first, though higher is better.
  assert.deepEqual(columnOrder(v, col("d", { better: "higher", first: "low" }), false), [1, 0, 3, 2]);
  assert.deepEqual(columnOrder(v, col("d", { first: "abs" }), false), [1, 3, 0, 2]);
  assert.deepEqual(columnOrder(v, col("d", { first: "high" }), true), [1, 0, 3, 2]);
});

test("the default sort column is the first with a better end, in group order", () => {
  const cols = [col("a", { group: "x" }), col("b", { group: "y", better: "lower" }), col("c", { group: "x", better: "higher" })];
  assert.equal(defaultSortColumn(cols)?.name, "c");
  assert.equal(defaultSortColumn([col("a")])?.name, "a");
  assert.equal(defaultSortColumn([]), null);
});

const TABLE = {
  run: "r", layer: "l", step: 2, filters: 3,
  columns: [col("m", { ci: "m_band", format: "percent" }), col("k", { format: "count" }), col("z", { format: "flag" })],
  values: {
    m: { shape: [3], values: Float32Array.from([-0.25, NaN, 0.1]) },
    m_band: { shape: [3, 2], values: Float32Array.from([-0.5, 0, NaN, NaN, 0, 0.2]) },
    k: { shape: [3], values: Float32Array.from([2, 0, 7]) },
    z: { shape: [3], values: Uint8Array.from([1, 0, 1]) },
  },
};

test("the CSV holds raw numbers, intervals as _lo/_hi after their column, empty for missing, flags 0/1", () => {
  const rows = tableCsvRows(TABLE);
  assert.deepEqual(rows[0], ["filter", "m", "m_lo", "m_hi", "k", "z"]);
  assert.deepEqual(rows[1], ["0", "-0.25", "-0.5", "0", "2", "1"]);
  assert.deepEqual(rows[2], ["1", "", "", "", "0", "0"]);
  // A float32 value is written as the double it is, as Python's repr(float(np.float32(x))) does.
  assert.deepEqual(rows[3], ["2", String(Math.fround(0.1)), "0", String(Math.fround(0.2)), "7", "1"]);
  assert.equal(rows[3][1], "0.10000000149011612");
  assert.equal(rows.length, 4);
});

test("the shown columns leave interval companions to their column", () => {
  const table = { ...TABLE, columns: [...TABLE.columns, col("m_band")] };
  assert.deepEqual(shownColumns(table).map((c) => c.name), ["m", "k", "z"]);
  assert.deepEqual(intervalOf(TABLE, TABLE.columns[0], 0), [-0.5, 0]);
  assert.equal(intervalOf(TABLE, TABLE.columns[0], 1), null);
  assert.equal(intervalOf(TABLE, TABLE.columns[1], 0), null);
});

test("a filter's facts: label, value as declared with its interval, description", () => {
  const facts = filterFacts({ ...TABLE, columns: [...TABLE.columns, col("u", { unit: "nats" })], values: { ...TABLE.values, u: { shape: [3], values: Float32Array.from([1, 2, 3]) } } },
    [...TABLE.columns, col("u", { unit: "nats" })], 0);
  // Ranked in the column's own order: m by magnitude (|-25%| before |10%|), k and u highest first.
  assert.deepEqual(facts.map((x) => [x.name, x.label, x.text]), [
    ["m", "M", "-25.0% [-50.0%, 0%] · 1/2"], ["k", "K", "2 · 2/3"], ["z", "Z", "yes"], ["u", "U", "1.00 nats · 3/3"],
  ]);
  assert.equal(facts[0].title, "what m is Bracketed: its 95% interval. Rank 1 of 2 in the layer, largest magnitude first; layer median -7.5%.");
  assert.equal(facts[2].title, "what z is");
});

test("the records older than the table's step are listed by kind", () => {
  const table = {
    ...TABLE, step: 5,
    columns: [col("a", { kind: "x", record_step: 5 }), col("b", { kind: "y", record_step: 3 }), col("c", { kind: "y", record_step: 3 })],
  };
  assert.deepEqual(olderRecords(table), [{ kind: "y", recordStep: 3, labels: ["B", "C"] }]);
  assert.deepEqual(olderRecords({ ...table, columns: [col("a")] }), []);
});

test("a whole-layer number reads as declared; a pooled one says its sample beside it", () => {
  const accuracy = col("acc", { format: "percent", value: 0.9166 });
  assert.equal(scalarText(accuracy), "91.7%");
  assert.equal(scalarText({ ...accuracy, value: null }), "—");
  const rho = col("rho", { value: 0.6234, filters: 96, steps: [3, 5, 7], record_step: 7 });
  assert.equal(scalarText(rho), "0.623 over 96 sampled filters from steps 3, 5, 7");
  assert.equal(scalarText({ ...rho, filters: 1, steps: [7] }), "0.623 over 1 sampled filter from step 7");
  // NaN arrives as null: too few sampled filters to rank.
  assert.equal(scalarText({ ...rho, value: null, filters: 2, steps: [7] }), "not enough sampled filters yet");
  assert.equal(stepsText([1, 2, 3, 4, 5, 6, 7]), "steps 1, 2, …, 7");
  const title = scalarTitle(rho, 9);
  assert.ok(title.startsWith("what rho is."), title);
  assert.ok(title.includes("From step 7, the last record at or before step 9."), title);
  assert.ok(title.includes("sampled at steps 3, 5, 7"), title);
  assert.equal(scalarTitle(accuracy), "what acc is.");
});

test("equal values share a rank, and the detail says how many it is tied with", () => {
  const p = col("p", { better: "lower" });
  const values = Float32Array.from([1, 0.2, 1, 1, 0.5]);
  assert.deepEqual(rankOf(values, p, 1), { rank: 3, ties: 2 });
  assert.deepEqual(rankOf(values, p, 0.2), { rank: 1, ties: 0 });
  const change = col("c", { format: "signed" }); // largest magnitude first
  assert.deepEqual(rankOf(Float32Array.from([-3, 3, 1, NaN]), change, 3), { rank: 1, ties: 1 });
  const table = { ...TABLE, filters: 5, columns: [p], values: { p: { shape: [5], values } } };
  const [fact] = filterFacts(table, [p], 3);
  assert.equal(fact.text, "1.00 · 3/5");
  assert.ok(fact.title.includes("Rank 3 of 5 in the layer, lowest first, tied with 2 other filters;"), fact.title);
});

test("an interval that goes below zero reads signed even where every value is zero", () => {
  const d = col("d", { ci: "d_band", format: "percent" });
  const table = {
    ...TABLE, filters: 2, columns: [d],
    values: { d: { shape: [2], values: Float32Array.from([0, 0]) }, d_band: { shape: [2, 2], values: Float32Array.from([-0.164, 0.164, -0.1, 0.1]) } },
  };
  assert.equal(filterFacts(table, [d], 0)[0].text, "0% [-16.4%, +16.4%] · 1/2");
});

test("a greyed row's reason keeps the unadjusted interval and the adjusted p apart", () => {
  const change = col("dacc", { label: "ΔACC", format: "percent", ci: "dacc_ci", group: "impact", kind: "i" });
  const flag = col("sig", { format: "flag", group: "impact", kind: "i" });
  const padj = col("padj", { group: "impact", kind: "i" });
  const table = {
    filters: 3,
    columns: [change, flag, padj],
    values: {
      dacc: { shape: [3], values: [-0.081, 0, 0.01] },
      dacc_ci: { shape: [3, 2], values: [-0.154, -0.005, -0.02, 0.02, -0.01, 0.03] },
      sig: { shape: [3], values: [0, 0, 0] },
      padj: { shape: [3], values: [0.26, 1, NaN] },
    },
  };
  assert.equal(
    notSignificantText(table, 0, "sig", "padj"),
    "ΔACC -8.1% [-15.4%, -0.5%]: 95% interval for this filter alone, not adjusted; " +
      "not significant once adjusted for the layer's 2 tested filters (p = 0.26, Benjamini–Hochberg).",
  );
  assert.equal(notSignificantText(table, 0, "sig", "absent"), null);
  assert.equal(notSignificantText({ ...table, columns: [flag, padj] }, 0, "sig", "padj"), null);
});

test("a p-value column reads '< 0.001' rather than an exponent", () => {
  const p = col("q", { format: "pvalue" });
  assert.equal(formatValue(p, 9.39e-9), "< 0.001");
  assert.equal(formatValue(p, 0.186), "0.19");
  assert.equal(formatValue(p, NaN), "—");
});
