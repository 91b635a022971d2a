// Feature visualisations as pixels (frontend/raster.js rgbLayout, paintRgb) and whether a layer has them (recordkeys.js).
import assert from "node:assert/strict";
import test from "node:test";

import { paintRgb, rgbLayout } from "../../frontend/raster.js";
import { hasFeatureVis } from "../../frontend/recordkeys.js";

test("rgbLayout: 3-channel images and clips are true colour, anything else is not", () => {
  const image = rgbLayout([3, 2, 3]);
  assert.equal(image?.width, 3);
  assert.equal(image?.height, 2);
  assert.equal(image?.stride, 6);
  assert.deepEqual(Array.from(image?.offsets ?? []), [0, 1, 2, 3, 4, 5]);
  const clip = rgbLayout([3, 2, 1, 2]); // two frames of 1×2, side by side with a separator
  assert.equal(clip?.width, 5);
  assert.deepEqual(Array.from(clip?.offsets ?? []), [0, 1, -1, 2, 3]);
  assert.equal(rgbLayout([1, 4, 4]), null);
  assert.equal(rgbLayout([3, 16]), null); // a 3-channel sequence: drawn per channel
});

test("paintRgb maps each channel's lo..hi to 0..255", () => {
  const layout = /** @type {NonNullable<ReturnType<typeof rgbLayout>>} */ (rgbLayout([3, 1, 2]));
  const image = { data: new Uint8ClampedArray(2 * 4), width: 2, height: 1 };
  // pixel 0 is (lo, mid, hi), pixel 1 is (hi, lo, mid), with channel ranges of their own.
  const values = new Float32Array([0, 1, /* G */ -1, -3, /* B */ 20, 15]);
  paintRgb(/** @type {any} */ (image), values, layout, { lo: [0, -3, 10], hi: [1, 1, 20] }, 0, 0);
  assert.deepEqual(Array.from(image.data), [0, 128, 255, 255, 255, 0, 128, 255]);
});

test("hasFeatureVis reads the kind's name from the index answer", () => {
  const names = /** @type {any} */ ({ feature_vis_kind: "fv-kind" });
  assert.equal(hasFeatureVis(names, { kinds: ["filters", "fv-kind"] }), true);
  assert.equal(hasFeatureVis(names, { kinds: ["filters"] }), false);
  assert.equal(hasFeatureVis(/** @type {any} */ ({}), { kinds: ["fv-kind"] }), false); // an older server
  assert.equal(hasFeatureVis(names, null), false);
});
