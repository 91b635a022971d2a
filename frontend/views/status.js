// What the dashboard is doing when there is nothing to show yet: loading, empty, failed.

import { el } from "./controls.js";

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountStatus(root, store) {
  const box = el("div", "cvz-status");
  box.dataset.testid = "status";
  box.setAttribute("role", "status");
  const message = el("p", "cvz-status-message");
  const hint = el("pre", "cvz-status-hint");
  hint.textContent = [
    "from tb_convviz import ConvViz",
    "",
    "viz = ConvViz(log_dir, probe=(images, labels))",
    "for epoch in range(epochs):",
    "    train_one_epoch(model)",
    "    viz.log(model, epoch)",
  ].join("\n");
  const retry = /** @type {HTMLButtonElement} */ (el("button", "cvz-button", "Reload"));
  retry.type = "button";
  retry.addEventListener("click", () => store.load());
  box.append(message, hint, retry);
  root.append(box);

  store.subscribe((s) => {
    box.hidden = s.phase === "ready";
    box.dataset.phase = s.phase;
    message.textContent = s.message;
    hint.hidden = s.phase !== "empty";
    retry.hidden = s.phase === "loading";
  });
}
