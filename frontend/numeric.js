// The dashboard's one copy of each numeric rule: how filters are ordered, what a median is, and how
// numbers read. Pure functions with no DOM, so node's test runner checks them (tests/js/).

/**
 * Whether `v` is a value at all: null, undefined, NaN and ±∞ are "missing" everywhere.
 * @param {?number|undefined} v @returns {v is number}
 */
export function present(v) {
  return v !== null && v !== undefined && Number.isFinite(v);
}

/**
 * Indices 0..keys.length-1 ordered by their key: ascending, or descending; missing keys last in
 * either direction, ties by index (so an order is stable across redraws and equal across views).
 * @param {ArrayLike<?number>} keys one per item @param {boolean} [descending]
 * @returns {number[]}
 */
export function sortOrder(keys, descending = false) {
  const sign = descending ? -1 : 1;
  return Array.from({ length: keys.length }, (_, i) => i).sort((a, b) => {
    const [ka, kb] = [keys[a], keys[b]];
    const [pa, pb] = [present(ka), present(kb)];
    if (pa !== pb) return pa ? -1 : 1;
    if (!pa) return a - b;
    return sign * (/** @type {number} */ (ka) - /** @type {number} */ (kb)) || a - b;
  });
}

/**
 * The median of the present values, averaging the middle pair of an even count (as numpy's
 * median, the backend's, does); null when there are none.
 * @param {ArrayLike<?number>} values @returns {?number}
 */
export function median(values) {
  const finite = /** @type {number[]} */ (Array.from(values).filter(present)).sort((a, b) => a - b);
  if (finite.length === 0) return null;
  const mid = finite.length >> 1;
  return finite.length % 2 ? finite[mid] : (finite[mid - 1] + finite[mid]) / 2;
}

/**
 * The mean of the present values; null when there are none.
 * @param {ArrayLike<?number>} values @returns {?number}
 */
export function mean(values) {
  const finite = /** @type {number[]} */ (Array.from(values).filter(present));
  return finite.length ? finite.reduce((a, b) => a + b, 0) / finite.length : null;
}

/**
 * A number for people: `digits` significant digits, exponent notation only below 1e-3 or from
 * 1e4 up; "—" when missing, "0" for float32 noise around zero (an unchanged filter's drift).
 * @param {?number|undefined} v @param {number} [digits]
 */
export function formatNumber(v, digits = 3) {
  if (!present(v)) return "—";
  const a = Math.abs(v);
  if (a < 1e-12) return "0";
  if (a >= 1e4 || a < 1e-3) return v.toExponential(digits - 1);
  // toPrecision switches to exponent notation once the integer part has more than `digits` digits.
  if (a >= 10 ** digits) return String(Math.round(v));
  return v.toPrecision(digits);
}

/**
 * A number with `decimals` fixed decimals ("0.88", "1.00"): for values on one scale shown side by
 * side, where a mix of "1.0" and "0.99" would read as different precisions; "—" when missing.
 * @param {?number|undefined} v @param {number} [decimals]
 */
export function formatFixed(v, decimals = 2) {
  return present(v) ? v.toFixed(decimals) : "—";
}

/** A signed number for people: "+0.012", "-0.3"; "—" when missing. @param {?number|undefined} v */
export function formatSigned(v) {
  const text = formatNumber(v);
  return present(v) && v > 0 && text !== "0" ? `+${text}` : text;
}

/** A whole number for people (a count); "—" when missing. @param {?number|undefined} v */
export function formatCount(v) {
  return present(v) ? String(Math.round(v)) : "—";
}

/**
 * A fraction as a percentage for people, never in exponent notation: one decimal, two below 0.1 %,
 * "<0.01%" below that. Signed (a change: "+1.5%", "-0.02%", "-<0.01%") unless `signed` is false
 * (a share: accuracy, positive fraction). "—" when missing.
 * @param {?number|undefined} v a fraction (0.5 is 50 %) @param {{signed?: boolean}} [options]
 */
export function formatPercent(v, { signed = true } = {}) {
  if (!present(v)) return "—";
  const p = v * 100;
  const a = Math.abs(p);
  if (a < 1e-10) return "0%";
  const sign = p < 0 ? "-" : signed ? "+" : "";
  if (a < 0.01) return `${sign}<0.01%`;
  const text = a < 0.1 ? a.toFixed(2) : a < 1000 ? a.toFixed(1) : String(Math.round(a));
  return `${sign}${text}%`;
}

/**
 * A p- or q-value for people: "< 0.001" below a thousandth (where more digits claim a precision a
 * probe does not have), else two significant digits; "—" when missing.
 * @param {?number|undefined} p
 */
export function formatP(p) {
  if (!present(p)) return "—";
  return p < 0.001 ? "< 0.001" : String(Number(p.toPrecision(2)));
}
