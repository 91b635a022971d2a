// The versions at play: a quiet line saying which tb_convviz serves the tab and which wrote the run
// shown, and a notice when a log was written in a newer format than this tb_convviz reads.

import { newerLogText, versionLine } from "../versions.js";
import { el } from "./controls.js";

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountNewerNotice(root, store) {
  const box = el("div", "cvz-newer");
  box.dataset.testid = "newer-notice";
  box.setAttribute("role", "note");
  root.append(box);

  /** @type {unknown} */
  let shown = null;
  store.subscribe((s) => {
    box.hidden = s.newerLogs.length === 0;
    if (s.newerLogs === shown) return;
    shown = s.newerLogs;
    box.replaceChildren(
      ...s.newerLogs.map((log) => {
        const line = el("p", "cvz-newer-line", newerLogText(log, s.version, s.formatVersion));
        line.dataset.run = log.run;
        return line;
      }),
    );
  });
}

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountVersionLine(root, store) {
  const line = el("p", "cvz-version");
  line.dataset.testid = "version";
  root.append(line);

  store.subscribe((s) => {
    line.hidden = !s.version;
    const run = s.phase === "ready" ? s.run : "";
    line.textContent = versionLine(s.version, run, store.runEntry(run)?.writer);
  });
}
