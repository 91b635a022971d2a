// The epoch slider: moves over the steps at which the chosen layer was logged.

import { el } from "./controls.js";

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountSlider(root, store) {
  const row = el("div", "cvz-slider-row");
  const label = el("label", "cvz-field-label");
  const input = document.createElement("input");
  input.type = "range";
  input.min = "0";
  input.step = "1";
  input.dataset.testid = "epoch-slider";
  input.id = "cvz-epoch-slider";
  label.htmlFor = input.id;
  const value = el("span", "cvz-slider-value");
  value.dataset.testid = "epoch-label";
  const ends = el("span", "cvz-slider-ends");
  row.append(label, input, value, ends);
  root.append(row);

  const steps = () => store.layerEntry()?.steps ?? [];
  input.addEventListener("input", () => {
    const step = steps()[Number(input.value)];
    if (step !== undefined) store.selectStep(step);
  });

  store.subscribe((s) => {
    const all = steps();
    row.hidden = s.phase !== "ready" || all.length === 0;
    if (row.hidden) return;
    label.textContent = { filters: "Step", epochs: "Step B", runs: "Step A", impact: "Step" }[s.mode];
    input.max = String(all.length - 1);
    input.disabled = all.length < 2;
    const i = all.indexOf(s.step);
    input.value = String(Math.max(0, i));
    value.textContent = `${s.step}`;
    ends.textContent = `${i + 1} of ${all.length} logged (steps ${all[0]}–${all[all.length - 1]})`;
  });
}
