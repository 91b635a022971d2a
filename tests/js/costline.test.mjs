// One log's cost in words (frontend/costline.js): the line, its ranking and shares, the warning.
import assert from "node:assert/strict";
import test from "node:test";

import {
  adviceFor,
  costAt,
  costLine,
  formatSeconds,
  partTitle,
  passesText,
  rankParts,
  slowWarning,
  slowerThanTraining,
} from "../../frontend/costline.js";

/** A /cost record with parts {name: wall seconds}; the probe pass (if any) is one forward-equivalent. */
function cost(parts, since = null) {
  const unit = parts["probe pass"] ?? 0;
  const wall = Object.values(parts).reduce((a, b) => a + b, 0);
  return {
    parts: Object.fromEntries(
      Object.entries(parts).map(([name, s]) => [name, { wall_s: s, cpu_s: s / 2, forward_equivalents: unit ? s / unit : null }]),
    ),
    wall_s: wall,
    cpu_s: wall / 2,
    forward_s: unit || null,
    forward_equivalents: unit ? wall / unit : null,
    span_s: wall * 1.01,
    since_last_log_s: since,
  };
}

/** Advice as /cost sends it (tb_convviz/write/cost.py ADVICE), for a few parts. */
const ADVICE = {
  advice: {
    impact: 'a smaller exact-ablation budget, impact={"exact_budget": ...}',
    perturbation: "perturbations=False, or response_filters=...",
    "statistics and maps": "map_images=..., map_size=...",
    similarity: "similarity_images=...",
    writing: "kernels_every=...",
    metrics: "your own metrics (metrics=[...])",
  },
  general_advice: "log less often (every_n_epochs=...)",
};

const ISSUE = cost({ "probe pass": 1, "statistics and maps": 3, impact: 61, perturbation: 22, similarity: 4, metrics: 2, writing: 4 });

test("seconds read as cost.py writes them", () => {
  assert.equal(formatSeconds(97), "97 s");
  assert.equal(formatSeconds(61.4), "61 s");
  assert.equal(formatSeconds(2.44), "2.4 s");
  assert.equal(formatSeconds(0.1), "0.1 s");
  assert.equal(formatSeconds(0.035), "35 ms");
  assert.equal(formatSeconds(0.01), "10 ms");
  assert.equal(formatSeconds(0.0094), "9.4 ms");
  assert.equal(formatSeconds(0.0004), "0.4 ms"); // not "0 ms" beside a share of a few percent
  assert.equal(formatSeconds(0.00001), "<0.1 ms");
  assert.equal(formatSeconds(0), "0 ms");
});

test("parts rank largest first, each with its share of the whole", () => {
  const ranked = rankParts(ISSUE);
  assert.deepEqual(ranked.map((p) => p.name).slice(0, 3), ["impact", "perturbation", "similarity"]);
  assert.ok(Math.abs(ranked[0].share - 61 / 97) < 1e-12);
  assert.ok(Math.abs(ranked.reduce((a, p) => a + p.share, 0) - 1) < 1e-12);
  // Ties break by name, so the line is the same every time.
  assert.deepEqual(ranked.slice(2, 4).map((p) => p.name), ["similarity", "writing"]);
});

test("the line is the issue's: total, then the largest parts with their shares", () => {
  assert.equal(costLine(ISSUE), "this log: 97 s — impact 61 s (63%), perturbation 22 s (23%), similarity 4.0 s (4%), writing 4.0 s (4%), …");
  assert.equal(costLine(cost({ "probe pass": 0.01, impact: 0.03 })), "this log: 40 ms — impact 30 ms (75%), probe pass 10 ms (25%)");
});

test("forward-equivalents read as probe passes", () => {
  assert.equal(passesText(52), "= 52 probe passes");
  assert.equal(passesText(1), "= 1 probe pass");
  assert.equal(passesText(4.21), "= 4.2 probe passes");
  assert.equal(passesText(null), "");
  const [impact] = rankParts(ISSUE);
  assert.equal(partTitle(impact, 1), "impact: 61 s wall, 31 s CPU, 63% of the log = 61 probe passes (one probe pass: 1.0 s)");
});

test("slower than training only when the parts took longer than the training since the last log", () => {
  assert.equal(slowerThanTraining(cost({ impact: 2 }, 1)), true);
  assert.equal(slowerThanTraining(cost({ impact: 2 }, 3)), false);
  assert.equal(slowerThanTraining(cost({ impact: 2 }, null)), false); // a run's first log
  assert.equal(slowWarning(cost({ impact: 2 }, 3), ADVICE), "");
});

test("the warning names the numbers it compares and what to change for the largest part", () => {
  const warning = slowWarning(cost({ "probe pass": 1, impact: 6, perturbation: 3 }, 4), ADVICE);
  assert.ok(warning.startsWith("analysis is slower than training: its analysis took 10 s, the training since the previous log 4.0 s."), warning);
  assert.ok(warning.includes("Largest part, impact (60%)"), warning);
  assert.ok(warning.includes('impact={"exact_budget": ...}'), warning);
  const cases = {
    perturbation: ["perturbations=False", "response_filters"],
    "statistics and maps": ["map_images", "map_size"],
    similarity: ["similarity_images"],
    writing: ["kernels_every"],
    metrics: ["metrics=[...]"],
  };
  for (const [part, options] of Object.entries(cases)) {
    const text = slowWarning(cost({ "probe pass": 1, [part]: 5 }, 1), ADVICE);
    for (const option of options) assert.ok(text.includes(option), `${part}: ${text}`);
    assert.equal(adviceFor(part, ADVICE), ADVICE.advice[part]);
  }
  // A part the server gives no advice for still gets the general advice.
  assert.ok(adviceFor("something new", ADVICE).includes("every_n_epochs"));
  assert.ok(!adviceFor("constructor", ADVICE).includes("function")); // not an Object prototype member
});

test("a step's record: its cost, null before costs were kept, undefined when not listed", () => {
  const answer = { steps: [0, 2], costs: [null, ISSUE] };
  assert.equal(costAt(answer, 2), ISSUE);
  assert.equal(costAt(answer, 0), null);
  assert.equal(costAt(answer, 1), undefined);
});
