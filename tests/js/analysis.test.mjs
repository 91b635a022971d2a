// Reading the /perturbation and /impact answers (frontend/analysis.js).
import assert from "node:assert/strict";
import test from "node:test";

import { answerFor, classesInWords, examplesNeededText, filterRow, filterValue, layerMedian, recordStepNote, whole } from "../../frontend/analysis.js";

/** A layer of 3 filters as the routes send it: flat row-major values, NaN as null. */
const arrays = {
  osi: { shape: [3], values: [0.5, null, 0.1] },
  stability: { shape: [3, 2], values: [1, 0.9, 0.8, 0.7, 0.6, 0.5] },
  noise_sigmas: { shape: [2], values: [0.1, 0.5] },
  accuracy: { shape: [], values: [0.75] },
};

test("filterValue and filterRow read one filter's value and row", () => {
  assert.equal(filterValue(arrays, "osi", 2), 0.1);
  assert.equal(filterValue(arrays, "osi", 1), null);
  assert.equal(filterValue(arrays, "missing", 0), null);
  assert.equal(filterValue(arrays, "stability", 0), null); // (F, X) is not a per-filter value
  assert.deepEqual(filterRow(arrays, "stability", 1), [0.8, 0.7]);
  assert.deepEqual(filterRow(arrays, "osi", 1), []);
  assert.deepEqual(filterRow(null, "stability", 1), []);
  assert.deepEqual(whole(arrays, "noise_sigmas"), [0.1, 0.5]);
  assert.deepEqual(whole(arrays, "accuracy"), [0.75]);
});

test("layerMedian is the median over the filters that have a value", () => {
  assert.equal(layerMedian(arrays, "osi"), 0.3);
  assert.equal(layerMedian(arrays, "missing"), null);
});

test("answerFor keeps an answer only for its run, layer and (once ready) step", () => {
  const data = { run: "a", layer: "conv1", step: 3 };
  const ready = { status: "ready", data, error: "" };
  assert.equal(answerFor(ready, { run: "a", layer: "conv1", step: 3 }), data);
  assert.equal(answerFor(ready, { run: "a", layer: "conv1", step: 4 }), null);
  assert.equal(answerFor(ready, { run: "a", layer: "conv1" }), data);
  assert.equal(answerFor(ready, { run: "b", layer: "conv1" }), null);
  assert.equal(answerFor({ ...ready, status: "loading" }, { run: "a", layer: "conv1", step: 3 }), null);
});

test("examplesNeededText says, smallest effect first, how many images of a class each needs", () => {
  const text = examplesNeededText({ "0.5": 15, "0.05": 157, "0.1": 78 });
  assert.equal(text, "A larger probe tells smaller changes from noise. To detect a 5% change: 157 images of a class; 10%: 78; 50%: 15.");
  assert.equal(examplesNeededText(undefined), "");
  assert.equal(examplesNeededText({}), "");
});

test("classesInWords names a class only when it is the majority", () => {
  assert.equal(classesInWords([0, 1, 2, 3, 4]), "5 classes, none a majority");
  assert.equal(classesInWords([2, 2, 1, 0, 3]), "4 classes, none a majority");
  assert.equal(classesInWords([2, 2, 1, 2, 0]), "3 of 5 are class 2");
  assert.equal(classesInWords([1, 1, 0, 0]), "2 classes, none a majority"); // a tie is no majority
  assert.equal(classesInWords([4, 4, 4]), "all 3 are class 4");
  assert.equal(classesInWords([null, 1, 1]), "all 2 are class 1");
  assert.equal(classesInWords([]), "their classes are unknown");
});

test("recordStepNote names the step a layer's responses come from only when it is an earlier one", () => {
  assert.equal(recordStepNote("perturbation", { step: 7, record_step: 7 }), "");
  assert.equal(recordStepNote("perturbation", { step: 7 }), ""); // logs read by an older server
  assert.equal(recordStepNote("perturbation", null), "");
  const text = recordStepNote("perturbation", { step: 7, record_step: 5 });
  assert.match(text, /^Perturbation responses from step 5, this layer's last before step 7/);
  assert.match(text, /response_filters/);
  assert.match(recordStepNote("impact", { step: 3, record_step: 1 }), /^Impact from step 1/);
});
