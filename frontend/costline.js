// What one log cost, in words: the /cost answer's record of a step (tb_convviz/write/cost.py) as one
// line, its parts largest first with their shares, and, when the analysis took longer than the
// training since the previous log, what to change for its largest part. Pure functions with no
// DOM, so node's test runner checks them (tests/js/).

/**
 * @typedef {{wall_s: number, cpu_s: number, forward_equivalents: ?number}} PartCost
 * @typedef {{parts: Record<string, PartCost>, wall_s: number, cpu_s: number, forward_s: ?number,
 *   forward_equivalents: ?number, span_s: number, span_cpu_s?: number, since_last_log_s: ?number}} LogCost
 *   one step's cost as /cost answers it: wall_s is the sum of the parts, span_s the whole log
 * @typedef {{name: string, wall_s: number, cpu_s: number, share: number, forward_equivalents: ?number}} RankedPart
 */

/** Parts the line names before "…"; the rest are in the "…"'s tooltip. */
export const SHOWN_PARTS = 4;

/**
 * Seconds for people, as cost.py's cost_line writes them — "97 s", "2.4 s", "35 ms" — and below
 * 10 ms with a decimal ("0.4 ms", not "0 ms" beside a share of 2%).
 * @param {number} s
 */
export function formatSeconds(s) {
  if (!Number.isFinite(s)) return "—";
  if (s >= 10) return `${Math.round(s)} s`;
  if (s >= 0.1) return `${s.toFixed(1)} s`;
  if (s >= 0.00995) return `${Math.round(s * 1000)} ms`;
  if (s >= 0.00005) return `${(s * 1000).toFixed(1)} ms`;
  return s > 0 ? "<0.1 ms" : "0 ms";
}

/** A share of the whole, "63%" ("<1%" for a part too small to round to 1%). @param {number} share */
export function formatShare(share) {
  const percent = Math.round(share * 100);
  return percent === 0 && share > 0 ? "<1%" : `${percent}%`;
}

/**
 * A count of forward-equivalents for people: "52", "4.2", "0.05".
 * @param {number} n
 */
export function formatPasses(n) {
  if (n >= 10) return String(Math.round(n));
  if (n >= 1) return n.toFixed(1).replace(/\.0$/, "");
  return n.toPrecision(1);
}

/**
 * The parts of a log, largest wall time first (ties by name), each with its share of the parts' sum.
 * @param {LogCost} cost @returns {RankedPart[]}
 */
export function rankParts(cost) {
  const total = cost.wall_s > 0 ? cost.wall_s : 0;
  return Object.entries(cost.parts)
    .map(([name, p]) => ({
      name,
      wall_s: p.wall_s,
      cpu_s: p.cpu_s,
      share: total > 0 ? p.wall_s / total : 0,
      forward_equivalents: p.forward_equivalents ?? null,
    }))
    .sort((a, b) => b.wall_s - a.wall_s || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/**
 * "= 52 probe passes": what a part (or the whole) cost in passes of the probe, the log's own
 * probe pass being one; empty when unknown.
 * @param {?number|undefined} n
 */
export function passesText(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return "";
  return `= ${formatPasses(n)} probe pass${formatPasses(n) === "1" ? "" : "es"}`;
}

/**
 * One part as the line names it: "impact 61 s (63%)".
 * @param {RankedPart} part
 */
export function partText(part) {
  return `${part.name} ${formatSeconds(part.wall_s)} (${formatShare(part.share)})`;
}

/**
 * What a part's tooltip says: its wall and CPU time and its cost in probe passes.
 * @param {RankedPart} part @param {?number} forwardSeconds the probe pass's wall time
 */
export function partTitle(part, forwardSeconds) {
  const passes = passesText(part.forward_equivalents);
  const unit = forwardSeconds ? ` (one probe pass: ${formatSeconds(forwardSeconds)})` : "";
  return (
    `${part.name}: ${formatSeconds(part.wall_s)} wall, ${formatSeconds(part.cpu_s)} CPU, ${formatShare(part.share)} of the log` +
    (passes ? ` ${passes}${unit}` : "")
  );
}

/**
 * The whole line in text: "this log: 97 s — impact 61 s (63%), perturbation 22 s (23%), …", its
 * first `shown` parts largest first (as cost.py's cost_line writes it).
 * @param {LogCost} cost @param {number} [shown]
 */
export function costLine(cost, shown = SHOWN_PARTS) {
  const ranked = rankParts(cost);
  const named = ranked.slice(0, shown).map(partText).join(", ");
  return `this log: ${formatSeconds(cost.wall_s)} — ${named}${ranked.length > shown ? ", …" : ""}`;
}

/**
 * Whether the log's analysis took longer than the training since the previous log: at that pace
 * log() ends up waiting for the analysis. Never for a run's first log (nothing to compare with).
 * @param {LogCost} cost
 */
export function slowerThanTraining(cost) {
  const since = cost.since_last_log_s;
  return since !== null && since !== undefined && Number.isFinite(since) && cost.wall_s > since;
}

/**
 * @typedef {{advice: Record<string, string>, general_advice: string}} Advice
 *   what the /cost answer says to change in ConvViz(...) for each part (tb_convviz/write/cost.py ADVICE)
 */

/**
 * What to change in ConvViz(...) to make part `name` cheaper, from the /cost answer's advice.
 * @param {string} name @param {Advice} advice
 */
export function adviceFor(name, advice) {
  return Object.hasOwn(advice.advice, name) ? advice.advice[name] : advice.general_advice;
}

/**
 * The warning when the log's analysis is slower than training, naming the numbers compared and
 * what to change for the largest part; empty when it is not.
 * @param {LogCost} cost @param {Advice} advice
 */
export function slowWarning(cost, advice) {
  if (!slowerThanTraining(cost)) return "";
  const [largest] = rankParts(cost);
  const since = /** @type {number} */ (cost.since_last_log_s);
  const compared = `its analysis took ${formatSeconds(cost.wall_s)}, the training since the previous log ${formatSeconds(since)}`;
  if (!largest) return `analysis is slower than training: ${compared}.`;
  return `analysis is slower than training: ${compared}. Largest part, ${largest.name} (${formatShare(largest.share)}): ${adviceFor(largest.name, advice)}.`;
}

/**
 * The record of `step` in a /cost answer: its cost, null for a log from before costs were kept,
 * undefined for a step the answer does not list.
 * @param {{steps: number[], costs: Array<?LogCost>}} answer @param {number} step
 * @returns {?LogCost|undefined}
 */
export function costAt(answer, step) {
  const i = answer.steps.indexOf(step);
  return i < 0 ? undefined : answer.costs[i];
}
