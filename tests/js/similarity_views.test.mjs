// The pure helpers of the CKA heatmaps and the filter map: the colour range a heatmap spans and
// the round ticks of the map's axes.
import { test } from "node:test";
import assert from "node:assert/strict";

import { colourRange } from "../../frontend/views/cka.js";
import { mapTicks } from "../../frontend/views/embedding.js";
import { formatFixed } from "../../frontend/numeric.js";

test("a heatmap's colours span its shown values, missing ones left out", () => {
  assert.deepEqual(colourRange([0.86, null, 0.99, NaN, 0.9]), { lo: 0.86, hi: 0.99 });
  const flat = colourRange([0.5, 0.5]);
  assert.ok(Math.abs(flat.lo - 0.49) < 1e-12 && Math.abs(flat.hi - 0.51) < 1e-12);
  assert.deepEqual(colourRange([null]), { lo: 0, hi: 1 });
});

test("the map's axis ticks are round, inside the range, and share a power of ten", () => {
  assert.deepEqual(mapTicks(-0.23, 0.91).ticks, [-0.2, 0, 0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(mapTicks(-0.23, 0.91).labels, ["−0.2", "0", "0.2", "0.4", "0.6", "0.8"]);
  assert.deepEqual(mapTicks(0, 10).ticks, [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(mapTicks(1, 1).ticks, []);
  // A component of tiny variance: "−2 0 2" in ×10⁻⁵ (the title says so), never "-3.06e-5".
  const tiny = mapTicks(-3.06e-5, 3.1e-5);
  assert.equal(tiny.exponent, -5);
  assert.ok(tiny.labels.length >= 3 && tiny.labels.every((l) => !/e/i.test(l)), tiny.labels.join(" "));
});

test("numbers on one scale read with the same decimals", () => {
  assert.deepEqual([1, 0.99, 0.8834, null].map((v) => formatFixed(v)), ["1.00", "0.99", "0.88", "—"]);
});
