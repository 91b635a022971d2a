// The Findings view's grouping: the kinds' declared order (their severity bands), each kind's
// findings in the order the server ranked them, kinds without findings left out.
import { test } from "node:test";
import assert from "node:assert/strict";

import { groupByKind } from "../../frontend/views/findings.js";

test("findings are grouped by kind in the declared order, ranked within a kind", () => {
  const kinds = [{ name: "shortcut" }, { name: "needed" }, { name: "dead" }].map((k) => ({ ...k, label: k.name }));
  const f = (kind, severity) => ({ kind, severity, filters: [], classes: [] });
  const findings = [f("needed", 0.85), f("shortcut", 0.95), f("needed", 0.81), f("shortcut", 0.91)];
  const groups = groupByKind(/** @type {any} */ (findings), /** @type {any} */ (kinds));
  assert.deepEqual(groups.map((g) => g.kind.name), ["shortcut", "needed"]);
  assert.deepEqual(groups[1].items.map((i) => i.severity), [0.85, 0.81]);
});
