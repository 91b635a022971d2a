// The pure helpers of the CKA heatmaps and the filter map: the colour range a heatmap spans and
// the round ticks of the map's axes.
import { test } from "node:test";
import assert from "node:assert/strict";

import { colourRange } from "../../frontend/views/cka.js";
import { niceTicks } from "../../frontend/views/embedding.js";
import { formatFixed } from "../../frontend/numeric.js";

test("a heatmap's colours span its shown values, missing ones left out", () => {
  assert.deepEqual(colourRange([0.86, null, 0.99, NaN, 0.9]), { lo: 0.86, hi: 0.99 });
  const flat = colourRange([0.5, 0.5]);
  assert.ok(Math.abs(flat.lo - 0.49) < 1e-12 && Math.abs(flat.hi - 0.51) < 1e-12);
  assert.deepEqual(colourRange([null]), { lo: 0, hi: 1 });
});

test("axis ticks are round and inside the range", () => {
  assert.deepEqual(niceTicks(-0.23, 0.91), [-0.2, 0, 0.2, 0.4, 0.6, 0.8]);
  assert.deepEqual(niceTicks(0, 10), [0, 2, 4, 6, 8, 10]);
  assert.deepEqual(niceTicks(1, 1), []);
});

test("numbers on one scale read with the same decimals", () => {
  assert.deepEqual([1, 0.99, 0.8834, null].map((v) => formatFixed(v)), ["1.00", "0.99", "0.88", "—"]);
});
