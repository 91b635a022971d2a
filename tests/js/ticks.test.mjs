// Axis ticks (frontend/ticks.js): run with `node --test tests/js/`.
import assert from "node:assert/strict";
import test from "node:test";

import { axisTicks, exponentText, tickLabels } from "../../frontend/ticks.js";

test("ticks are round, evenly spaced and span the data", () => {
  const axis = axisTicks(0.639, 0.996);
  assert.deepEqual(axis.ticks, [0.6, 0.7, 0.8, 0.9, 1]);
  assert.deepEqual(axis.labels, ["0.6", "0.7", "0.8", "0.9", "1.0"]);
  assert.equal(axis.exponent, 0);
  assert.ok(axis.lo <= 0.639 && axis.hi >= 0.996);
});

test("a signed range gets a tick at zero, labelled 0 with a true minus below it", () => {
  const axis = axisTicks(-0.031, 0.012);
  assert.ok(axis.ticks.includes(0));
  assert.equal(axis.labels[axis.ticks.indexOf(0)], "0");
  assert.ok(axis.labels[0].startsWith("−"));
});

test("tiny values share a power of ten instead of exponent notation per tick", () => {
  const axis = axisTicks(-3.06e-5, 2.1e-5);
  assert.equal(axis.exponent, -5);
  assert.equal(exponentText(axis.exponent), "×10⁻⁵");
  for (const label of axis.labels) assert.doesNotMatch(label, /e/);
  assert.deepEqual(axis.labels, ["−4", "−2", "0", "2", "4"].filter((_, i) => i < axis.labels.length));
});

test("integer axes (steps) never get fractional ticks, even over a short range", () => {
  assert.deepEqual(axisTicks(0, 2, { integer: true }).ticks, [0, 1, 2]);
  assert.deepEqual(axisTicks(3, 3, { integer: true }).ticks, [2, 3, 4]);
  assert.deepEqual(axisTicks(0, 90, { integer: true }).ticks, [0, 50, 100]);
  assert.deepEqual(axisTicks(0, 9, { integer: true }).ticks, [0, 5, 10]);
});

test("large values share a power of ten; labels carry no more decimals than the step needs", () => {
  const axis = axisTicks(120000, 480000);
  assert.deepEqual(axis.ticks, [100000, 200000, 300000, 400000, 500000]);
  assert.equal(axis.exponent, 5);
  assert.deepEqual(axis.labels, ["1", "2", "3", "4", "5"]);
  assert.deepEqual(tickLabels([0, 0.25, 0.5], 0.25).labels, ["0", "0.25", "0.50"]);
  assert.equal(exponentText(0), "");
});

test("a flat range is widened around its value; a reversed one is put in order", () => {
  const flat = axisTicks(2, 2);
  assert.ok(flat.lo < 2 && flat.hi > 2);
  assert.deepEqual(axisTicks(1, 0).ticks, axisTicks(0, 1).ticks);
  assert.throws(() => axisTicks(NaN, 1), RangeError);
});
