// The dashboard's numeric rules (frontend/numeric.js): run with `node --test tests/js/`.
import assert from "node:assert/strict";
import test from "node:test";

import { formatCount, formatNumber, formatPercent, formatSigned, mean, median, present, sortOrder } from "../../frontend/numeric.js";

test("present: null, undefined, NaN and infinities are missing", () => {
  assert.deepEqual([0, -1.5, null, undefined, NaN, Infinity, -Infinity].map(present), [true, true, false, false, false, false, false]);
});

test("sortOrder ascending and descending, ties by index", () => {
  const keys = [3, 1, 2, 1, 3];
  assert.deepEqual(sortOrder(keys), [1, 3, 2, 0, 4]);
  assert.deepEqual(sortOrder(keys, true), [0, 4, 2, 1, 3]);
});

test("sortOrder puts missing keys last in both directions, by index among themselves", () => {
  const keys = [null, 2, NaN, -1, Infinity, 5];
  assert.deepEqual(sortOrder(keys), [3, 1, 5, 0, 2, 4]);
  assert.deepEqual(sortOrder(keys, true), [5, 1, 3, 0, 2, 4]);
  assert.deepEqual(sortOrder([]), []);
  assert.deepEqual(sortOrder(new Float32Array([0.5, 0.25])), [1, 0]);
});

test("median averages the middle pair of an even count, like numpy", () => {
  assert.equal(median([4, 1, 3]), 3);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.equal(median([10, null, 2, NaN]), 6); // missing values are left out
  assert.equal(median([7]), 7);
  assert.equal(median([]), null);
  assert.equal(median([null, NaN]), null);
});

test("mean of the present values", () => {
  assert.equal(mean([1, 2, null, 6, NaN]), 3);
  assert.equal(mean([]), null);
  assert.equal(mean([null]), null);
});

test("formatNumber: three significant digits, exponents only for the very small and the very large", () => {
  assert.equal(formatNumber(0.123456), "0.123");
  assert.equal(formatNumber(-12.345), "-12.3");
  assert.equal(formatNumber(123.4), "123");
  assert.equal(formatNumber(1234.4), "1234"); // toPrecision(3) would write 1.23e+3
  assert.equal(formatNumber(0.00164), "0.00164");
  assert.equal(formatNumber(0.000164), "1.64e-4");
  assert.equal(formatNumber(123456), "1.23e+5");
  assert.equal(formatNumber(0.5, 2), "0.50");
  assert.equal(formatNumber(3e-13), "0");
  assert.equal(formatNumber(null), "—");
  assert.equal(formatNumber(NaN), "—");
  assert.equal(formatNumber(undefined), "—");
});

test("formatSigned and formatCount", () => {
  assert.equal(formatSigned(0.0125), "+0.0125");
  assert.equal(formatSigned(-0.3), "-0.300");
  assert.equal(formatSigned(1e-14), "0");
  assert.equal(formatSigned(null), "—");
  assert.equal(formatCount(3.6), "4");
  assert.equal(formatCount(null), "—");
});

test("formatPercent never uses exponent notation", () => {
  assert.equal(formatPercent(-0.083), "-8.3%");
  assert.equal(formatPercent(0.5), "+50.0%");
  assert.equal(formatPercent(-0.000222), "-0.02%"); // was "-2.2e-2%"
  assert.equal(formatPercent(0.00099), "+0.10%");
  assert.equal(formatPercent(-0.0000004), "-<0.01%");
  assert.equal(formatPercent(2e-9), "+<0.01%");
  assert.equal(formatPercent(0), "0%");
  assert.equal(formatPercent(1.23456), "+123.5%");
  assert.equal(formatPercent(12.3456), "+1235%");
  assert.equal(formatPercent(null), "—");
  for (const v of [1e-3, 1e-5, 1e-7, 1e-9, -1e-4, 1e3]) assert.doesNotMatch(formatPercent(v), /e/);
});

test("formatPercent of a share has no sign", () => {
  assert.equal(formatPercent(0.917, { signed: false }), "91.7%");
  assert.equal(formatPercent(0.00001, { signed: false }), "<0.01%");
  assert.equal(formatPercent(0, { signed: false }), "0%");
});

test("formatP: two significant digits, '< 0.001' below a thousandth, never exponent notation", async () => {
  const { formatP } = await import("../../frontend/numeric.js");
  assert.equal(formatP(0.2634), "0.26");
  assert.equal(formatP(1), "1");
  assert.equal(formatP(0.0012), "0.0012");
  assert.equal(formatP(9.39e-9), "< 0.001");
  assert.equal(formatP(null), "—");
  assert.equal(formatP(NaN), "—");
});
