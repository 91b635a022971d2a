// The view state in the address (frontend/urlstate.js): what is read back is what was written,
// TensorBoard's plugin name and anyone else's keys stay, and junk is ignored.
import assert from "node:assert/strict";
import test from "node:test";

import { readViewState, withViewState } from "../../frontend/urlstate.js";

test("a view state survives the address, odd run names included", () => {
  const state = { run: "a&b=c #1", layer: "layer4.2.conv3", view: "runs", step: 12, filter: 0, runB: "other", stepB: 3, pairStep: 9 };
  const hash = withViewState("#convviz", state);
  assert.ok(hash.startsWith("#convviz&"));
  assert.deepEqual(readViewState(hash), state);
});

test("writing replaces our keys and keeps TensorBoard's and others'", () => {
  const hash = withViewState("#convviz&cvz.run=old&cvz.filter=4&smoothing=0.6", { run: "new", step: 2 });
  assert.equal(hash, "#convviz&smoothing=0.6&cvz.run=new&cvz.step=2");
});

test("the sort column a finding opens with survives the address", () => {
  const state = { run: "r", layer: "conv", view: "impact", step: 2, filter: 4, sort: "cf/remove marker" };
  assert.deepEqual(readViewState(withViewState("#convviz", state)), state);
});

test("junk and missing keys read as absent", () => {
  assert.deepEqual(readViewState("#convviz&cvz.step=x&cvz.filter=&cvz.view=impact&other=1"), { view: "impact" });
  assert.deepEqual(readViewState(""), {});
});
