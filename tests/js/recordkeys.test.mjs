import { test } from "node:test";
import assert from "node:assert/strict";

import {
  counterfactualKey,
  driftKeys,
  exactKey,
  loggedGroups,
  perturbationKeys,
  shapeTextureIndexKey,
  significantKey,
  topExampleKey,
} from "../../frontend/recordkeys.js";

// Deliberately not the server's names: every key must follow the names the index answer sends.
const NAMES = {
  kinds: ["perturbation", "impact"],
  perturbation_groups: {
    orientation: ["ang", "curve", "sel", "pref", "freq"],
    rotation: ["ang", "rot"],
    noise: ["sig", "stab", "stab_ci"],
    adversarial: ["eps", "attack1", "attack2", "attack1_ci", "attack2_ci"],
    shift: ["frac", "shifted"],
    reversal: ["reversed"],
    shape_texture: ["tx:shape", "tx:texture", "tx:index"],
  },
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
  assert.equal(significantKey(NAMES), null);
  assert.equal(significantKey({ ...NAMES, impact_significant: "sig?" }), "sig?");
});

test("the response charts' arrays come from the groups' declared order", () => {
  assert.deepEqual(perturbationKeys(NAMES), {
    angles: "ang", tuning: "curve", osi: "sel", preferred: "pref", frequency: "freq", rotation: "rot", sigmas: "sig",
    stability: "stab", stabilityCi: "stab_ci", epsilon: "eps", fgsm: "attack1", pgd: "attack2", fgsmCi: "attack1_ci",
    pgdCi: "attack2_ci", fractions: "frac", shift: "shifted", reversal: "reversed",
  });
  const none = perturbationKeys({ ...NAMES, perturbation_groups: {} });
  assert.ok(Object.values(none).every((v) => v === undefined));
});

test("loggedGroups is true only for a group the answer holds keys of", () => {
  assert.deepEqual(loggedGroups({ groups: { orientation: ["osi"], rotation: [] } }), { orientation: true, rotation: false });
  assert.deepEqual(loggedGroups(null), {});
});

test("the drift keys come from the drift group's declared columns", () => {
  const col = (name, group, format = "number") => ({ name, group, format });
  const columns = [col("w", "statistics"), col("d1", "drift"), col("n1", "drift", "percent"), col("d0", "drift")];
  assert.deepEqual(driftKeys(columns), { previous: "d1", normPrevious: "n1", first: "d0" });
  assert.deepEqual(driftKeys([col("d0", "drift")]), { previous: null, normPrevious: null, first: "d0" });
  assert.deepEqual(driftKeys([]), { previous: null, normPrevious: null, first: null });
});
