// Axis ticks for the small charts: round values (1, 2 or 5 × 10^k apart) that span the data, and
// their labels with one shared power of ten, so an axis reads "−2 0 2 (×10⁻⁵)", not "-3.06e-5".

/**
 * @typedef {{ticks: number[], lo: number, hi: number, labels: string[], exponent: number}} Axis
 *   ticks: the tick values, lo … hi: the axis range (the outer ticks), labels: each tick's text,
 *   exponent: the power of ten the labels are in (0: as they are)
 */

const SUPERSCRIPT = { "-": "⁻", 0: "⁰", 1: "¹", 2: "²", 3: "³", 4: "⁴", 5: "⁵", 6: "⁶", 7: "⁷", 8: "⁸", 9: "⁹" };

/**
 * The round step between about `count` ticks over a span: 1, 2 or 5 × 10^k, at least `minStep`.
 * @param {number} span @param {number} count @param {number} minStep
 */
function niceStep(span, count, minStep) {
  const raw = span / Math.max(1, count);
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw) ?? 10 * power;
  return Math.max(step, minStep);
}

/**
 * Ticks over [lo, hi]: the multiples of a round step from the one at or below `lo` to the one at or
 * above `hi` (so the data lies within the outer ticks). A flat range is widened around its value.
 * @param {number} lo @param {number} hi @param {{count?: number, integer?: boolean}} [options]
 *   count: about how many intervals; integer: whole-number ticks only (steps, indices)
 * @returns {Axis}
 */
export function axisTicks(lo, hi, { count = 4, integer = false } = {}) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new RangeError(`axisTicks needs a finite range, got ${lo} … ${hi}`);
  if (hi < lo) [lo, hi] = [hi, lo];
  if (hi === lo) {
    const d = integer ? 1 : Math.abs(hi) * 0.05 || 1;
    [lo, hi] = [lo - d, hi + d];
  }
  const step = niceStep(hi - lo, count, integer ? 1 : 0);
  // Snap to the step's multiples, with room for float error (0.30000000000000004 is a multiple of 0.1).
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  const ticks = [];
  for (let k = first; k <= last; k++) ticks.push(Number((k * step).toPrecision(12)));
  const { labels, exponent } = tickLabels(ticks, step);
  return { ticks, lo: ticks[0], hi: ticks[ticks.length - 1], labels, exponent };
}

/**
 * Labels for ticks `step` apart: as many decimals as the step needs and no more; below 0.01 or
 * from 10⁵ up, in a shared power of ten (the axis title says which).
 * @param {number[]} ticks @param {number} step @returns {{labels: string[], exponent: number}}
 */
export function tickLabels(ticks, step) {
  const top = Math.max(...ticks.map(Math.abs));
  const exponent = top > 0 && (top < 0.01 || top >= 1e5) ? Math.floor(Math.log10(top)) : 0;
  const scale = 10 ** exponent;
  // The fewest decimals that write the step exactly (0.5 → 1, 0.25 → 2, 20 → 0).
  let decimals = 0;
  while (decimals < 10 && Math.abs(Math.round((step / scale) * 10 ** decimals) - (step / scale) * 10 ** decimals) > 1e-6) decimals++;
  const labels = ticks.map((t) => {
    const text = (t / scale).toFixed(decimals);
    return Number(text) === 0 ? "0" : text.replace("-", "−"); // no "-0", and a true minus sign
  });
  return { labels, exponent };
}

/** "×10⁻⁵" for exponent −5; "" for 0. @param {number} exponent */
export function exponentText(exponent) {
  if (!exponent) return "";
  return `×10${String(exponent).split("").map((c) => SUPERSCRIPT[/** @type {keyof typeof SUPERSCRIPT} */ (c)]).join("")}`;
}
