// One filter in detail (work in progress).

/** @param {HTMLElement} root @param {import("../store.js").Store} store */
export function mountDetail(root, store) {
  const panel = document.createElement("section");
  panel.className = "cvz-card";
  panel.dataset.testid = "detail-panel";
  root.append(panel);
  store.subscribe((s) => {
    panel.hidden = s.filter === null;
    panel.textContent = s.filter === null ? "" : `Filter #${s.filter}`;
  });
}
