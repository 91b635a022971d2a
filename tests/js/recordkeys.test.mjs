import { test } from "node:test";
import assert from "node:assert/strict";

import { counterfactualKey, exactKey, hasGroup, shapeTextureIndexKey, topExampleKey } from "../../frontend/recordkeys.js";

// Deliberately not the server's prefixes: every key must follow the names the index answer sends.
const NAMES = {
  kinds: ["perturbation", "impact"],
  perturbation_groups: { orientation: ["osi"], shape_texture: ["tx:shape", "tx:texture", "tx:index"] },
  counterfactual_prefix: "edit:",
  top_example_prefix: "best.",
  impact_exact: "ablated",
  shape_texture_index: "tx:index",
};

test("record keys are built from the index answer's names, not from literals", () => {
  assert.equal(counterfactualKey(NAMES, "no red"), "edit:no red");
  assert.equal(counterfactualKey(NAMES, "no red", "flag"), "edit:no red/flag");
  assert.equal(topExampleKey(NAMES, "label"), "best.label");
  assert.equal(exactKey(NAMES), "ablated");
  assert.equal(shapeTextureIndexKey(NAMES), "tx:index");
  assert.equal(shapeTextureIndexKey({ ...NAMES, perturbation_groups: {} }), null);
});

test("hasGroup is true only for a group the answer holds keys of", () => {
  const answer = { groups: { orientation: ["osi"], rotation: [] } };
  assert.equal(hasGroup(answer, "orientation"), true);
  assert.equal(hasGroup(answer, "rotation"), false);
  assert.equal(hasGroup(answer, "noise"), false);
  assert.equal(hasGroup(null, "noise"), false);
});
